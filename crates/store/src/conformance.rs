//! The behaviour every [`Store`] must show. Run it against each implementation and
//! decorator: `conformance::run(&store).await`. Returns the first violated rule.

use crate::{ErrorKind, PutMode, Store};

fn fail(rule: &str) -> String {
    format!("store conformance: {rule}")
}

pub async fn run(store: &dyn Store) -> Result<(), String> {
    let e = |r: &str| fail(r);
    // Create, read back, ranged read, head.
    store.put("conf/a/one", b"hello world".to_vec(), PutMode::Create).await.map_err(|x| fail(&format!("put: {x}")))?;
    if store.get("conf/a/one", None).await.map_err(|x| fail(&format!("get: {x}")))? != b"hello world" {
        return Err(e("get returns what put wrote"));
    }
    if store.get("conf/a/one", Some(6..11)).await.map_err(|x| fail(&format!("ranged get: {x}")))? != b"world" {
        return Err(e("ranged get returns the range"));
    }
    if store.head("conf/a/one").await.map_err(|x| fail(&format!("head: {x}")))?.size != 11 {
        return Err(e("head reports the size"));
    }
    // Create-only refuses to overwrite and leaves the object intact.
    match store.put("conf/a/one", b"other".to_vec(), PutMode::Create).await {
        Err(x) if x.kind() == ErrorKind::AlreadyExists => {}
        _ => return Err(e("create-only put of an existing key fails with AlreadyExists")),
    }
    if store.get("conf/a/one", None).await.map_err(|x| fail(&x.to_string()))? != b"hello world" {
        return Err(e("a refused create leaves the object unchanged"));
    }
    store
        .put("conf/a/one", b"replaced".to_vec(), PutMode::Overwrite)
        .await
        .map_err(|x| fail(&format!("overwrite: {x}")))?;
    if store.get("conf/a/one", None).await.map_err(|x| fail(&x.to_string()))? != b"replaced" {
        return Err(e("overwrite replaces"));
    }
    // Missing objects.
    match store.get("conf/missing", None).await {
        Err(x) if x.is_not_found() => {}
        _ => return Err(e("get of a missing key is NotFound")),
    }
    match store.head("conf/missing").await {
        Err(x) if x.is_not_found() => {}
        _ => return Err(e("head of a missing key is NotFound")),
    }
    // Listing is recursive, complete, and empty for a missing prefix.
    store.put("conf/b/c/two", vec![1, 2, 3], PutMode::Create).await.map_err(|x| fail(&x.to_string()))?;
    store.put("conf/b/empty", Vec::new(), PutMode::Create).await.map_err(|x| fail(&x.to_string()))?;
    let mut l: Vec<(String, u64)> =
        store.list("conf").await.map_err(|x| fail(&x.to_string()))?.into_iter().map(|m| (m.path, m.size)).collect();
    l.sort();
    let want = vec![("conf/a/one".to_string(), 8), ("conf/b/c/two".to_string(), 3), ("conf/b/empty".to_string(), 0)];
    if l != want {
        return Err(fail(&format!("list returns every object with its size: got {l:?}")));
    }
    if !store.list("nothing-here").await.map_err(|x| fail(&x.to_string()))?.is_empty() {
        return Err(e("list of a missing prefix is empty"));
    }
    // Delete.
    store.delete("conf/a/one").await.map_err(|x| fail(&format!("delete: {x}")))?;
    match store.get("conf/a/one", None).await {
        Err(x) if x.is_not_found() => {}
        _ => return Err(e("a deleted object is gone")),
    }
    if store.delete("conf/a/one").await.is_err() {
        return Err(e("deleting a missing object succeeds (deletes are idempotent)"));
    }
    for p in ["conf/b/c/two", "conf/b/empty"] {
        store.delete(p).await.map_err(|x| fail(&x.to_string()))?;
    }
    Ok(())
}
