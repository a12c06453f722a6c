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
