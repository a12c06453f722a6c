//! The SFTP store against a real OpenSSH server that the test starts on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use cairn_store::{PutMode, Store};

fn server(dir: &std::path::Path) -> Option<cairn_testkit::ssh::Sshd> {
    let s = cairn_testkit::ssh::Sshd::start(dir);
    if s.is_none() {
        cairn_testkit::skip("OpenSSH server (sshd) is not installed; scripts/test installs it");
    }
    s
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn sftp_store_passes_conformance_and_moves_large_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = server(&tmp.path().join("sshd")) else { return };
    std::env::set_var("CAIRN_SSH_ARGS", sshd.ssh_args());
    std::env::remove_var("CAIRN_SFTP_COMMAND");
    std::env::remove_var("CAIRN_SFTP_CONNECTIONS");
    let root = tmp.path().join("repo");
    let store = cairn_store_sftp::open(&format!("sftp://cairn-test{}", root.display())).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let big = cairn_testkit::noise(17 * 1024 * 1024 + 77, 5);
    rt.block_on(async {
        cairn_store::conformance::run(&store).await.unwrap();
        assert!(store.capabilities().atomic_create, "OpenSSH links atomically");
        // A pack-sized object: many pipelined requests each way, odd size, ranged reads
        // across chunk boundaries.
        store.put("data/ab/pack", big.clone(), PutMode::Create).await.unwrap();
        assert_eq!(std::fs::read(root.join("data/ab/pack")).unwrap(), big, "the file on the server");
        assert_eq!(store.get("data/ab/pack", None).await.unwrap(), big);
        let r = 300_000u64..3_000_123;
        assert_eq!(store.get("data/ab/pack", Some(r.clone())).await.unwrap(), &big[r.start as usize..r.end as usize]);
        assert!(store.get("data/ab/pack", Some(0..big.len() as u64 + 1)).await.is_err());
        // Many concurrent puts on one connection, then a listing that sees them all
        // (and not the temporaries).
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.put(&format!("data/{:02x}/obj{i}", i % 8), i.to_le_bytes().to_vec(), PutMode::Create).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let l = store.list("data").await.unwrap();
        assert_eq!(l.len(), 65, "{l:?}");
        assert!(l.iter().all(|m| m.modified.is_some()));
        let leftovers: Vec<_> = walk(&root).into_iter().filter(|p| p.contains(".tmp-")).collect();
        assert!(leftovers.is_empty(), "temporary files left on the server: {leftovers:?}");
    });
    // The server really is a separate process: a killed connection is reconnected.
    rt.block_on(async {
        assert_eq!(sshd.drop_connections(), 1, "one connection carried every request");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(store.get("data/00/obj0", None).await.unwrap(), 0u32.to_le_bytes(), "the next request reconnects");
        assert_eq!(sshd.drop_connections(), 1, "on a new connection");
        // A request that meets the cut fails transiently, and the retry decorator (as the
        // CLI stacks it) carries it over to a new connection.
        let retrying: std::sync::Arc<dyn Store> = std::sync::Arc::new(cairn_store::RetryStore::new(
            std::sync::Arc::new(store.clone()),
            5,
            std::time::Duration::from_millis(50),
        ));
        match store.head("data/00/obj0").await {
            Err(e) => assert!(e.is_transient(), "{e}"),
            Ok(_) => eprintln!("the cut was noticed before the request"),
        }
        retrying.head("data/00/obj0").await.unwrap();
        // Cut while a large put is in flight: no partial object, and the put completes.
        let r2 = retrying.clone();
        let big2 = big.clone();
        let put = tokio::spawn(async move { r2.put("data/cd/pack", big2, PutMode::Create).await });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        sshd.drop_connections();
        put.await.unwrap().unwrap();
        assert_eq!(store.get("data/cd/pack", None).await.unwrap(), big);
    });
    // The server goes away (listener too) and comes back: requests meanwhile are refused
    // as a passing failure, and the retrying store (as the CLI stacks it: 6 tries, from
    // 200 ms) reaches the restarted server.
    let mut sshd = sshd;
    sshd.stop();
    let restarted = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        sshd.resume();
        sshd
    });
    let retrying =
        cairn_store::RetryStore::new(std::sync::Arc::new(store.clone()), 6, std::time::Duration::from_millis(200));
    rt.block_on(async {
        assert_eq!(retrying.get("data/00/obj0", None).await.unwrap(), 0u32.to_le_bytes());
    });
    let sshd = restarted.join().unwrap();
    // A pool of connections (CAIRN_SFTP_CONNECTIONS) keeps the same contract, and really
    // opens that many.
    sshd.drop_connections();
    std::env::set_var("CAIRN_SFTP_CONNECTIONS", "3");
    let pooled = cairn_store_sftp::open(&format!("sftp://cairn-test{}", tmp.path().join("pooled").display())).unwrap();
    rt.block_on(async {
        cairn_store::conformance::run(&pooled).await.unwrap();
        assert_eq!(pooled.list("nothing").await.unwrap().len(), 0);
    });
    assert_eq!(sshd.drop_connections(), 3);
}
