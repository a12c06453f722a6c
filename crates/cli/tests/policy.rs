#![allow(clippy::unwrap_used)]
//! `cairn policy check`: every example policy passes; each kind of mistake is one line
//! naming file:line:column, and exit 2.

mod common;
use common::policy::Policy;
use common::*;

#[test]
fn every_example_policy_passes_the_check() {
    let env = Env::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = env.ok(&["policy", "check", p.to_str().unwrap()]);
            assert!(out.contains(": OK ("), "{}: {out}", p.display());
            assert!(out.contains("next runs of"), "{}: {out}", p.display());
            let v = env.json(&["policy", "check", p.to_str().unwrap()]);
            assert!(!v["sources"].as_array().unwrap().is_empty(), "{}", p.display());
            // A copy with its own retention shows it (003's secondary keeps by its own rules).
            if p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("003")) {
                assert!(out.contains("secondary (keep daily 30"), "{out}");
                let copied = v["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|s| s["copy_to"]["value"].as_array().unwrap().clone());
                assert!(
                    copied.into_iter().any(|c| c["repository"] == "secondary"
                        && c["keep"].as_str().is_some_and(|k| k.contains("weekly 26"))),
                    "{v}"
                );
            }
            n += 1;
        }
    }
    assert!(n >= 5, "one example per seed procedure, found {n}");
}

const BASE: &str = r#"[repository.primary]
url = "/srv/repo"
password_file = "/etc/cairn/p.pass"

[class.critical]
repository = "primary"
schedule = "*/15 * * * *"
rpo = "20m"

[source.uploads]
class = "critical"
kind = "files"
paths = ["/srv/uploads"]
"#;

/// (what is changed, the replacement, expected line:column, a word of the message)
const MISTAKES: &[(&str, &str, &str, &str)] = &[
    ("rpo = \"20m\"", "rpo = \"20m\"\nrpoo = \"1h\"", "9:1", "unknown field"),
    ("rpo = \"20m\"", "rpo = \"twenty minutes\"", "8:7", "not a duration"),
    ("*/15 * * * *", "*/15 * * *", "7:12", "*/15 * * *"),
    ("class = \"critical\"", "class = \"critcal\"", "11:9", "class \"critcal\" is not defined"),
    ("repository = \"primary\"", "repository = \"primry\"", "6:14", "repository \"primry\" is not defined"),
    ("*/15 * * * *", "0 2 * * *", "7:12", "more than its rpo"),
    ("rpo = \"20m\"", "rpo = \"20m\"\ntimezone = \"Mars/Olympus\"", "9:12", "unknown time zone"),
    ("rpo = \"20m\"", "rpo = \"20m\"\npaths = [\"/x\"]", "9:9", "not in a class"),
    (
        "paths = [\"/srv/uploads\"]",
        "paths = [\"/srv/uploads\"]\ncommand = \"x\"",
        "14:11",
        "does not apply to a files source",
    ),
    ("kind = \"files\"", "kind = \"tape\"", "12:8", "not one of files"),
    ("paths = [\"/srv/uploads\"]", "paths = [\"relative\"]", "13:9", "not an absolute path"),
    ("url = \"/srv/repo\"", "url = \"/srv/repo\"\nobject_lock_days = 0", "3:20", "object_lock_days"),
    ("rpo = \"20m\"", "rpo = \"20m\"\ndrill = { pick = \"oldest\" }", "9:9", "use \"latest\" or \"random\""),
    ("rpo = \"20m\"", "rpo = \"20m\"\ndrill = { from = \"primary\", timeout = \"0s\" }", "9:9", "longer than zero"),
    (
        "paths = [\"/srv/uploads\"]",
        "paths = [\"/srv/uploads\"]\nvalidate = [{ query = \"SELECT 1\" }]",
        "14:12",
        "queries apply to postgres and sqlite",
    ),
    (
        "paths = [\"/srv/uploads\"]",
        "paths = [\"/srv/uploads\"]\nvalidate = [{ command = \"true\", min = 3 }]",
        "14:12",
        "min applies to a query",
    ),
    (
        "paths = [\"/srv/uploads\"]",
        "paths = [\"/srv/uploads\"]\n[alert.x]\nkind = \"webhook\"\nurl = \"ftp://x\"",
        "16:7",
        "use http:// or https://",
    ),
    (
        "paths = [\"/srv/uploads\"]",
        "paths = [\"/srv/uploads\"]\n[alert.x]\nkind = \"command\"\ncommand = \"true\"\nevents = [\"job_failled\"]",
        "17:10",
        "does not exist",
    ),
];

#[test]
fn each_kind_of_mistake_is_one_located_line_and_exit_2() {
    let env = Env::new();
    let file = env.path("cairn.toml");
    std::fs::write(&file, BASE).unwrap();
    env.ok(&["policy", "check", file.to_str().unwrap()]);
    for (from, to, at, word) in MISTAKES {
        assert!(BASE.contains(from), "{from}");
        std::fs::write(&file, BASE.replacen(from, to, 1)).unwrap();
        let o = env.run(&["policy", "check", file.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{to}: {err}");
        assert_eq!(err.lines().count(), 1, "{to}: {err}");
        let want = format!("{}:{at}: ", file.display());
        assert!(err.contains(&want), "{to}: expected {want}, got {err}");
        assert!(err.contains(word), "{to}: expected {word:?} in {err}");
        // The daemon refuses to start on it, the same way.
        let o = env.cmd().env("CAIRN_CONFIG", &file).arg("daemon").output().unwrap();
        assert_eq!(o.status.code(), Some(2), "daemon on {to}: {}", stderr(&o));
    }
    // A missing file is a plain error, not a usage error.
    let o = env.run(&["policy", "check", env.path("nope.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
}

/// `compression` in a class, overridden by a source: each source's backups store new data
/// at its level (off stores text as is, max far below it), `policy check` says which level
/// and where it came from, and both restore.
#[test]
fn compression_is_chosen_per_class_and_source() {
    let p = Policy::new("");
    let mut text = String::new();
    for i in 0..40_000u32 {
        text.push_str(&format!("{i:08} a line of a log that compresses {}\n", i % 97));
    }
    for s in ["packed", "plain"] {
        std::fs::create_dir_all(p.env.path(s)).unwrap();
        // Not the same bytes twice: the second backup would find them stored.
        std::fs::write(p.env.path(s).join("log.txt"), text.replace("log", s)).unwrap();
    }
    p.write(&format!(
        "[class.logs]\nrepository = \"primary\"\ncompression = \"max\"\n\n\
         [source.packed]\nclass = \"logs\"\nkind = \"files\"\npaths = [\"{}\"]\n\n\
         [source.plain]\nclass = \"logs\"\nkind = \"files\"\npaths = [\"{}\"]\ncompression = \"off\"\n",
        p.env.path("packed").display(),
        p.env.path("plain").display()
    ));
    let show = p.json(&["policy", "check"]);
    let of = |name: &str| {
        show["sources"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["compression"].clone()
    };
    assert_eq!(of("packed"), serde_json::json!({"value": "max", "from": "class"}), "{show}");
    assert_eq!(of("plain"), serde_json::json!({"value": "off", "from": "source"}), "{show}");
    p.ok(&["run", "packed"]);
    p.ok(&["run", "plain"]);
    let snaps = p.env.json(&["snapshots"]);
    let added = |path: &str| {
        snaps.as_array().unwrap().iter().find(|s| s["paths"][0].as_str().unwrap().ends_with(path)).unwrap()["summary"]
            ["bytes_added"]
            .as_u64()
            .unwrap()
    };
    assert!(added("/plain") > text.len() as u64, "off stored {} of {}", added("/plain"), text.len());
    assert!(added("/packed") < text.len() as u64 / 5, "max stored {} of {}", added("/packed"), text.len());
    let out = p.env.path("out");
    p.env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    p.env.ok(&["check", "--read-data"]);
}
