// cairn console: the few things a page needs the API for. Everything shown from the
// server's data goes through textContent, never innerHTML.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  const api = async (method, url, body) => {
    const r = await fetch(url, {
      method,
      headers: Object.assign({ "X-CSRF-Token": csrf }, body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
      credentials: "same-origin",
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) throw new Error((data && data.error) || r.status + " " + r.statusText);
    return data;
  };
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  };
  const human = (n) => {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  };

  const logout = document.getElementById("logout");
  if (logout) logout.addEventListener("click", async () => {
    try { await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } }); } finally { location.href = "/login"; }
  });

  // Forms that start work: POST JSON, then follow the task until it ends.
  const follow = async (out, task) => {
    for (;;) {
      const t = await api("GET", "/api/tasks/" + task.id);
      let text = t.kind + " " + t.state;
      if (t.bytes_total) text += ": " + human(t.bytes_done) + " of " + human(t.bytes_total);
      if (t.error) text += ": " + t.error;
      if (t.result && t.result.snapshot) text += ", snapshot " + t.result.snapshot.slice(0, 8);
      if (t.result && t.result.files !== undefined) text += ", " + t.result.files + " files, " + human(t.result.bytes_written);
      out.textContent = text;
      out.dataset.state = t.state;
      if (t.state !== "running") return t;
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  document.querySelectorAll("form.action[data-api]").forEach((form) => {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = form.querySelector("output.task");
      const f = new FormData(form);
      let url = form.dataset.api;
      let body = {};
      if (form.id === "restore-form") {
        const inPlace = f.get("mode") === "in_place";
        url = inPlace ? "/api/restore/in-place" : "/api/restore/copy";
        body = { snapshot: f.get("snapshot"), repository: f.get("repository"), paths: [f.get("paths")] };
        if (inPlace) body.confirm = f.get("confirm"); else body.target = f.get("target");
      } else {
        for (const [k, v] of f.entries()) body[k] = v;
      }
      out.textContent = "starting…";
      out.dataset.state = "starting";
      try {
        const task = await api("POST", url, body);
        await follow(out, task);
      } catch (e) {
        out.textContent = "refused: " + e.message;
        out.dataset.state = "refused";
      }
    });
  });

  const inPlace = document.getElementById("in-place");
  if (inPlace) {
    const box = document.getElementById("in-place-confirm");
    document.querySelectorAll('input[name="mode"]').forEach((r) =>
      r.addEventListener("change", () => { box.hidden = !inPlace.checked; }));
    document.getElementById("preview-overwrite").addEventListener("click", async () => {
      const form = document.getElementById("restore-form");
      const f = new FormData(form);
      const list = document.getElementById("overwrite-list");
      list.replaceChildren();
      try {
        const p = await api("POST", "/api/restore/in-place/preview",
          { snapshot: f.get("snapshot"), repository: f.get("repository"), paths: [f.get("paths")] });
        if (!p.preview.overwrite.length) list.appendChild(el("li", "nothing existing is overwritten"));
        p.preview.overwrite.forEach((x) => list.appendChild(el("li", x)));
        if (p.preview.overwrite_more) list.appendChild(el("li", "and " + p.preview.overwrite_more + " more"));
        list.appendChild(el("li", p.preview.create + " entries created"));
      } catch (e) { list.appendChild(el("li", "preview failed: " + e.message)); }
    });
  }

  // Previews and versions of files (buttons carry the snapshot, repository and path).
  const q = (o) => Object.entries(o).filter(([, v]) => v).map(([k, v]) => k + "=" + encodeURIComponent(v)).join("&");
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    const tree = document.getElementById("tree");
    const repo = b.dataset.repository || (tree && tree.dataset.repository);
    if (b.classList.contains("joblog")) {
      // A job's log, below its row.
      const row = b.closest("tr");
      const next = row.nextElementSibling;
      if (next && next.classList.contains("log")) { next.remove(); return; }
      const tr = el("tr", undefined, "log");
      const td = el("td"); td.colSpan = row.children.length;
      const pre = el("pre", "loading…");
      td.appendChild(pre); tr.appendChild(td); row.after(tr);
      try {
        const j = await api("GET", "/api/jobs/" + b.dataset.job);
        pre.textContent = j.log.map((l) => l.at + "  " + l.line).join("\n") || "(no log lines)";
        if (j.drill) pre.textContent += "\n\ndrill: " + JSON.stringify(j.drill, null, 2);
      } catch (e) { pre.textContent = "failed: " + e.message; }
    } else if (b.classList.contains("preview")) {
      const pre = document.getElementById("preview");
      pre.hidden = false;
      try {
        const p = await api("GET", "/api/snapshots/" + (b.dataset.snapshot || tree.dataset.snapshot) + "/file?" +
          q({ repository: repo, path: b.dataset.path, preview: "true" }));
        pre.textContent = p.binary ? "(binary file, " + human(p.size) + ")" : p.text + (p.truncated ? "\n…" : "");
      } catch (e) { pre.textContent = "preview failed: " + e.message; }
    } else if (b.classList.contains("versions")) {
      const box = document.getElementById("versions");
      box.replaceChildren(el("h2", "Versions of " + b.dataset.path));
      try {
        const vs = await api("GET", "/api/versions?" + q({ repository: repo, path: b.dataset.path }));
        const ul = el("ul");
        vs.forEach((v) => ul.appendChild(el("li", v.time + " · snapshot " + v.snapshot.slice(0, 8) + " · " +
          human(v.size) + " · modified " + v.mtime + " · in " + v.snapshots + " snapshots")));
        box.appendChild(ul);
      } catch (e) { box.appendChild(el("p", "failed: " + e.message)); }
    } else if (b.classList.contains("expand") && tree) {
      // The tree loads lazily: a directory's entries are fetched when it is opened.
      const row = b.closest("tr");
      if (b.dataset.open) {
        document.querySelectorAll('tr[data-parent="' + CSS.escape(b.dataset.path) + '"]').forEach((r) => r.remove());
        delete b.dataset.open; b.textContent = "▸"; return;
      }
      try {
        const l = await api("GET", "/api/snapshots/" + tree.dataset.snapshot + "/tree?" + q({ repository: repo, path: b.dataset.path }));
        b.dataset.open = "1"; b.textContent = "▾";
        const depth = (Number(row.dataset.depth) || 0) + 1;
        let after = row;
        l.entries.forEach((e) => {
          const tr = el("tr");
          tr.dataset.parent = b.dataset.path; tr.dataset.path = e.path; tr.dataset.depth = depth;
          const td = el("td");
          td.style.paddingLeft = depth * 1.5 + "em";
          if (e.type === "dir") {
            const x = el("button", "▸", "expand"); x.type = "button"; x.dataset.path = e.path;
            td.appendChild(x); td.appendChild(document.createTextNode(" "));
            td.appendChild(el("span", e.name + "/", "name"));
          } else td.appendChild(el("span", e.name, "name"));
          tr.appendChild(td);
          tr.appendChild(el("td", e.type));
          tr.appendChild(el("td", e.type === "file" ? human(e.size) : ""));
          tr.appendChild(el("td", e.mtime));
          tr.appendChild(el("td", ""));
          after.after(tr); after = tr;
        });
      } catch (e) { alert("could not open " + b.dataset.path + ": " + e.message); }
    }
  });
})();
