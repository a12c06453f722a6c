#![allow(clippy::unwrap_used)]
//! Shell completions and man pages, generated from the parser's own definitions: bash
//! completes subcommands and options (as a user's shell would, through the completion
//! function it sources), and `cairn man` writes a readable page per subcommand.

mod common;

use std::process::Command;

use common::*;

/// What bash's completion function offers for `words` (the last one being completed).
fn complete(env: &Env, words: &[&str]) -> Vec<String> {
    let script = env.path("cairn.bash");
    let out = env.run(&["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&script, &out.stdout).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let prog = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; _cairn cairn '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        line.len(),
        words[words.len() - 1],
        if words.len() > 1 { words[words.len() - 2] } else { "" }
    );
    let o = Command::new("bash").arg("--norc").arg("-c").arg(prog).output().unwrap();
    assert!(o.status.success(), "bash: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_options() {
    let env = Env::new();
    let top = complete(&env, &["cairn", ""]);
    for want in ["backup", "restore", "snapshots", "daemon", "token", "--repo"] {
        assert!(top.iter().any(|w| w == want), "{want} not offered: {top:?}");
    }
    let opts = complete(&env, &["cairn", "backup", "--ex"]);
    assert!(opts.iter().any(|w| w == "--exclude") && opts.iter().any(|w| w == "--exclude-file"), "{opts:?}");
    assert_eq!(complete(&env, &["cairn", "rest"]), vec!["restore".to_string()]);
    // zsh and fish scripts come from the same definitions.
    for shell in ["zsh", "fish"] {
        let o = env.run(&["completions", shell]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("restore"), "{shell}");
    }
    let o = env.run(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn man_pages_for_every_subcommand() {
    let env = Env::new();
    let dir = env.path("man1");
    env.ok(&["man", dir.to_str().unwrap()]);
    let top = std::fs::read_to_string(dir.join("cairn.1")).unwrap();
    assert!(top.contains(".TH cairn") && top.contains("restore"), "{top}");
    for sub in ["backup", "restore", "daemon", "token", "drill"] {
        let page = std::fs::read_to_string(dir.join(format!("cairn-{sub}.1"))).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "cairn-{sub}.1 is not a man page");
    }
    let restore = std::fs::read_to_string(dir.join("cairn-restore.1")).unwrap();
    assert!(restore.contains("target"), "{restore}");
}

/// Runs cairn under a pseudo-terminal (util-linux `script`), returning what the terminal got.
fn on_terminal(env: &Env, args: &str) -> String {
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{} {args}", env!("CARGO_BIN_EXE_cairn")), "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("TERM", "xterm")
        .env("CAIRN_REPO", &env.repo)
        .env("CAIRN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(o.status.success(), "script {args}: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn progress_shows_an_eta_on_a_terminal_json_lines_on_request_and_nothing_in_a_pipe() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    // Data that does not compress, restored at 2 MiB/s: a few seconds to watch.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let bytes: Vec<u8> = (0..6_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(data.join("big.bin"), &bytes).unwrap();
    // In a pipe: no progress at all, on either stream.
    let o = env.run(&["backup", data.to_str().unwrap()]);
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(!err.contains("ETA") && !err.contains('\r') && !err.contains("\x1b["), "{err:?}");
    // On a terminal: a bar with percentage, bytes of total, a rate and an ETA.
    let target = env.path("t1");
    let screen = on_terminal(&env, &format!("--limit-download 2048 restore latest --target {}", target.display()));
    let line = screen.split('\r').find(|l| l.contains("ETA")).unwrap_or_else(|| panic!("no ETA shown: {screen:?}"));
    // Done of total (done may still be in KiB on the first lines), then the rate.
    assert!(line.contains('%') && line.contains(" / 5.72 MiB") && line.contains("/s"), "{line:?}");
    // --json-progress: JSON lines on stderr, about one a second, the last at 100%.
    let target = env.path("t2");
    let o = env.run(&[
        "--json-progress",
        "--limit-download",
        "2048",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stderr(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 2 && lines.len() <= 8, "{} lines in about 3 s", lines.len());
    assert!(lines.iter().all(|l| l["type"] == "progress" && l["operation"] == "restore"));
    // Restore counts a pack's bytes when the pack has arrived: a line taken while some
    // but not all have arrived has an ETA (on a busy machine the packs may all arrive
    // between two lines; the terminal bar above has shown the ETA already).
    let midway =
        |l: &&serde_json::Value| l["bytes_done"].as_u64().is_some_and(|d| d > 0 && Some(d) < l["bytes_total"].as_u64());
    assert!(lines.iter().filter(midway).all(|l| l["eta_secs"].is_u64()), "{lines:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["bytes_done"], last["bytes_total"]);
    // check --read-data: packs of total, a bar and an ETA (the structural part draws none).
    let screen = on_terminal(&env, "--limit-download 2048 check --read-data");
    let line = screen.split('\r').find(|l| l.contains("ETA")).unwrap_or_else(|| panic!("no ETA shown: {screen:?}"));
    assert!(line.contains("packs") && line.contains('%'), "{line:?}");
    let screen = on_terminal(&env, "check");
    assert!(!screen.contains("ETA") && !screen.contains('%'), "{screen:?}");
    // copy: JSON lines counting snapshots and their bytes, the last complete.
    let dst = env.path("copy");
    let o = env.cmd().env("CAIRN_REPO", &dst).args(["init"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env
        .cmd()
        .env("CAIRN_TO_PASSWORD", PASSWORD)
        .args(["--json-progress", "--limit-download", "2048", "copy", "--to", dst.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        stderr(&o).lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(lines.iter().all(|l| l["operation"] == "copy"), "{lines:?}");
    let last = lines.last().unwrap();
    assert_eq!((last["snapshots_done"].as_u64(), last["snapshots_total"].as_u64()), (Some(1), Some(1)), "{last}");
    assert_eq!(last["bytes_done"], last["bytes_total"], "{last}");
    // prune: its repack counted in packs (what it reads and writes), the last line final.
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    let o = env.run(&["--json-progress", "prune"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let last: serde_json::Value =
        serde_json::from_str(stderr(&o).lines().rfind(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(last["operation"], "prune", "{last}");
    assert_eq!(last["packs_done"], last["packs_total"], "{last}");
}
