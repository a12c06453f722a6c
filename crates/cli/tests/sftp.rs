#![allow(clippy::unwrap_used)]
//! Repositories on an SSH server through SFTP: a private OpenSSH `sshd` started by the
//! test on 127.0.0.1, reached through the system `ssh` with a generated key and a pinned
//! host key (`CAIRN_SSH_ARGS="-F ssh_config"`).

mod common;
use common::*;

use std::process::Output;

use cairn_testkit::ssh::Sshd;

struct SftpEnv {
    env: Env,
    server: Sshd,
    url: String,
    dir: std::path::PathBuf,
}

impl SftpEnv {
    fn new() -> Option<SftpEnv> {
        let env = Env::new();
        let Some(server) = Sshd::start(&env.path("sshd")) else {
            cairn_testkit::skip("OpenSSH server (sshd) is not installed; scripts/test installs openssh-server");
            return None;
        };
        let dir = env.path("remote/repo");
        let url = format!("sftp://cairn-test{}", dir.display());
        Some(SftpEnv { env, server, url, dir })
    }
}

impl RemoteRepo for SftpEnv {
    fn env(&self) -> &Env {
        &self.env
    }
    fn vars(&self) -> Vec<(String, String)> {
        vec![("CAIRN_REPO".into(), self.url.clone()), ("CAIRN_SSH_ARGS".into(), self.server.ssh_args())]
    }
}

#[test]
fn backup_restore_check_prune_and_copy_over_sftp() {
    let Some(s) = SftpEnv::new() else { return };
    let src = s.env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..30u64 {
        std::fs::write(src.join(format!("d/f{i}")), noise(40_000 + i as usize * 1000, 3 * i + 1)).unwrap();
    }
    std::fs::write(src.join("big"), noise(6_000_000, 7)).unwrap();
    s.ok(&["init"]);
    assert!(s.dir.join("config").is_file(), "the repository is on the server's disk");
    let b1 = s.json(&["backup", src.to_str().unwrap()]);
    assert!(b1["bytes_added"].as_u64().unwrap() > 6_000_000, "{b1}");
    let b2 = s.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(b2["bytes_read"], 0, "unchanged files are not read again: {b2}");
    let t = s.env.path("r");
    s.ok(&["restore", &format!("latest:{}", src.display()), "--target", t.to_str().unwrap()]);
    assert!(compare_trees(&src, &t, false).is_empty());
    s.ok(&["check", "--read-data"]);
    // The same repository read as a local directory: the objects are the format's, not
    // an SFTP-specific layout.
    let local = s.env.cmd().env("CAIRN_REPO", &s.dir).args(["--json", "snapshots"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");

    std::fs::remove_file(src.join("big")).unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
    s.ok(&["forget", "--keep-last", "1"]);
    // What a killed writer leaves: a temporary file, old; and a live writer's, new.
    let stale = s.dir.join("data/.tmp-4242-1");
    let live = s.dir.join("data/.tmp-4242-2");
    std::fs::write(&stale, noise(5000, 1)).unwrap();
    std::fs::write(&live, noise(5000, 2)).unwrap();
    assert!(std::process::Command::new("touch").args(["-d", "3 hours ago"]).arg(&stale).status().unwrap().success());
    let p = s.json(&["prune", "--delete-now"]);
    assert!(p["packs_deleted"].as_u64().unwrap() >= 1, "{p}");
    assert!(!stale.exists(), "prune removes a killed writer's temporary file on the server: {p}");
    assert!(live.exists(), "and leaves a young one alone");
    s.ok(&["check", "--read-data"]);

    // Copy local -> SFTP and back.
    s.env.init();
    s.env.ok(&["backup", src.to_str().unwrap()]);
    let o = s
        .env
        .cmd()
        .env("CAIRN_SSH_ARGS", s.server.ssh_args())
        .env("CAIRN_TO_PASSWORD", PASSWORD)
        .args(["--json", "copy", "--to", &s.url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let snaps = s.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    let o = s.run(&["copy", "--to", s.env.repo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    s.ok(&["check", "--read-data"]);
    s.env.ok(&["check", "--read-data"]);
}

#[test]
fn connection_failures_are_one_line_errors() {
    let Some(s) = SftpEnv::new() else { return };
    let one_line = |o: &Output, want: &str| {
        // The status says which signal, if one ended it (a CI run once saw none: 0.46 s).
        assert_eq!(o.status.code(), Some(1), "{} / {}", o.status, stderr(o));
        let e = stderr(o);
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        assert!(e.contains(want), "wanted '{want}': {e}");
    };
    // A host key that does not match the pinned one: ssh refuses, cairn says why.
    let other = s.env.path("other_known_hosts");
    let kh = format!(
        "[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMd9L1z4T0c2T9HLbBXbRcL+0jzk6w8fSWHWnRQ9vs4v\n",
        s.server.port
    );
    std::fs::write(&other, kh).unwrap();
    let o = s
        .env
        .cmd()
        .env("CAIRN_REPO", &s.url)
        .env("CAIRN_SSH_ARGS", format!("{} -o UserKnownHostsFile={}", s.server.ssh_args(), other.display()))
        .args(["init"])
        .output()
        .unwrap();
    one_line(&o, "Host key verification failed");
    assert!(!s.dir.exists(), "nothing was written");
    // Nobody listening.
    let o = s
        .env
        .cmd()
        .env("CAIRN_REPO", "sftp://127.0.0.1:1/x")
        .env("CAIRN_SSH_ARGS", "-o BatchMode=yes -o ConnectTimeout=5")
        .args(["snapshots"])
        .output()
        .unwrap();
    one_line(&o, "Connection refused");
    // A path with no repository.
    let o = s.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no repository at sftp://"), "{}", stderr(&o));
}
