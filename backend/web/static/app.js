// ragstack web page: upload, watch ingestion, list/delete documents, search.
// Plain JS, no dependencies. Untrusted text (file names, passages, error messages) only ever
// reaches the DOM through textContent / createTextNode, never innerHTML.
"use strict";

(() => {
  const KEY_STORAGE = "ragstack.apiKey";
  const PREFS_STORAGE = "ragstack.searchPrefs";
  const PAGE_SIZE = 50;
  const POLL_MS = 700;
  const POLL_HIDDEN_MS = 4000;
  const UPLOAD_CONCURRENCY = 3;
  const IN_PROGRESS = new Set(["queued", "parsing", "embedding", "deleting"]);
  const TERMINAL = new Set(["indexed", "failed"]);

  const $ = (id) => document.getElementById(id);
  const el = {
    authPanel: $("auth-panel"),
    authToggle: $("auth-toggle"),
    authForm: $("auth-form"),
    authReason: $("auth-reason"),
    authClear: $("auth-clear"),
    keyInput: $("api-key-input"),
    messages: $("messages"),
    searchForm: $("search-form"),
    searchInput: $("search-input"),
    searchButton: $("search-button"),
    modeSelect: $("mode-select"),
    topkInput: $("topk-input"),
    rerankInput: $("rerank-input"),
    groupInput: $("group-input"),
    contextSelect: $("context-select"),
    summary: $("search-summary"),
    results: $("results"),
    dropzone: $("dropzone"),
    fileInput: $("file-input"),
    uploads: $("uploads"),
    uploadsClear: $("uploads-clear"),
    docsBody: $("docs-body"),
    docsTable: $("docs-table"),
    docsEmpty: $("docs-empty"),
    docsCount: $("docs-count"),
    docsRefresh: $("docs-refresh"),
    pager: $("docs-pager"),
    prev: $("docs-prev"),
    next: $("docs-next"),
    range: $("docs-range"),
    rowTemplate: $("doc-row-template"),
  };

  // ---------------------------------------------------------------------------------------------
  // Small DOM helpers

  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "className") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  function formatBytes(n) {
    if (!isNum(n)) return "—";
    if (n < 1024) return `${n} B`;
    const units = ["KB", "MB", "GB", "TB"];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function formatScore(v) {
    return isNum(v) ? v.toFixed(4) : "—";
  }

  function formatMs(v) {
    if (!isNum(v)) return "—";
    return v >= 100 ? `${Math.round(v)} ms` : `${v.toFixed(1)} ms`;
  }

  const relFormat =
    typeof Intl !== "undefined" && Intl.RelativeTimeFormat
      ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" })
      : null;

  function timeNode(iso) {
    if (!iso) return document.createTextNode("—");
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return document.createTextNode(String(iso));
    const t = h("time", { datetime: d.toISOString(), title: d.toLocaleString() });
    t.textContent = relativeTime(d);
    return t;
  }

  function relativeTime(d) {
    const secs = Math.round((d.getTime() - Date.now()) / 1000);
    const abs = Math.abs(secs);
    if (!relFormat) return d.toLocaleString();
    if (abs < 45) return "just now";
    if (abs < 45 * 60) return relFormat.format(Math.round(secs / 60), "minute");
    if (abs < 22 * 3600) return relFormat.format(Math.round(secs / 3600), "hour");
    if (abs < 7 * 86400) return relFormat.format(Math.round(secs / 86400), "day");
    return d.toLocaleDateString();
  }

  // ---------------------------------------------------------------------------------------------
  // Messages

  function showMessage(text, kind = "error", { timeout } = {}) {
    const close = h("button", { type: "button", className: "btn btn-quiet btn-small msg-close" }, "Dismiss");
    const msg = h("div", { className: `msg msg-${kind}`, role: kind === "error" ? "alert" : null },
      h("span", { className: "msg-text" }, text), close);
    close.addEventListener("click", () => msg.remove());
    el.messages.append(msg);
    // Keep the list short.
    while (el.messages.children.length > 4) el.messages.firstElementChild.remove();
    const ms = timeout ?? (kind === "error" ? 0 : 5000);
    if (ms > 0) setTimeout(() => msg.remove(), ms);
    return msg;
  }

  // ---------------------------------------------------------------------------------------------
  // API key

  function getKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  function setKey(value) {
    try {
      if (value) localStorage.setItem(KEY_STORAGE, value);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // Private mode without storage: the key lives for this page only.
    }
    memoryKey = value;
  }

  let memoryKey = getKey();

  function authHeaders() {
    const key = memoryKey || getKey();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function openAuth(reason) {
    el.authPanel.hidden = false;
    el.authToggle.setAttribute("aria-expanded", "true");
    if (reason) el.authReason.textContent = reason;
    el.keyInput.value = memoryKey || "";
    el.keyInput.focus();
  }

  function closeAuth() {
    el.authPanel.hidden = true;
    el.authToggle.setAttribute("aria-expanded", "false");
  }

  let authPrompted = false;
  function needAuth(detail) {
    if (authPrompted && !el.authPanel.hidden) return;
    authPrompted = true;
    const had = Boolean(memoryKey);
    let why = (had ? "The stored API key was rejected" : "This backend needs an API key") +
      (detail ? ` (${detail.replace(/[.\s]+$/, "")})` : "");
    why += ". Enter it below; it is kept in this browser (localStorage).";
    openAuth(why);
  }

  el.authToggle.addEventListener("click", () => {
    if (el.authPanel.hidden) openAuth();
    else closeAuth();
  });

  el.authForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    setKey(el.keyInput.value.trim());
    authPrompted = false;
    closeAuth();
    showMessage(memoryKey ? "API key saved." : "API key cleared.", "info");
    loadDocuments();
    retryFailedUploads((u) => u.status === 401);
  });

  el.authClear.addEventListener("click", () => {
    setKey("");
    el.keyInput.value = "";
    showMessage("API key forgotten.", "info");
  });

  // ---------------------------------------------------------------------------------------------
  // HTTP

  class ApiError extends Error {
    constructor(status, detail, retryAfter) {
      super(describeError(status, detail, retryAfter));
      this.status = status;
      this.detail = detail;
      this.retryAfter = retryAfter;
    }
  }

  // FastAPI `detail` is a string, or for 422 a list of {loc, msg}; anything else is stringified.
  function detailText(detail) {
    if (detail === undefined || detail === null || detail === "") return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => {
          if (d && typeof d === "object") {
            const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
            const msg = d.msg ?? d.message ?? JSON.stringify(d);
            return loc ? `${loc}: ${msg}` : String(msg);
          }
          return String(d);
        })
        .join("; ");
    }
    if (typeof detail === "object") {
      if (typeof detail.message === "string") return detail.message;
      if (typeof detail.msg === "string") return detail.msg;
      return JSON.stringify(detail);
    }
    return String(detail);
  }

  function parseRetryAfter(value) {
    if (!value) return null;
    const secs = Number(value);
    if (Number.isFinite(secs)) return Math.max(0, Math.ceil(secs));
    const at = Date.parse(value);
    return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
  }

  function describeError(status, detail, retryAfter) {
    const d = detailText(detail);
    // "Prefix: detail." — always ending in a full stop so a hint can follow.
    const withDetail = (prefix) => {
      const t = d ? `${prefix}: ${d}` : prefix;
      return /[.!?…]$/.test(t) ? t : `${t}.`;
    };
    switch (status) {
      case 0:
        return "Cannot reach the backend. Is it running?";
      case 401:
        return withDetail("An API key is needed");
      case 403:
        return withDetail("Not allowed");
      case 404:
        return withDetail("Not found");
      case 409:
        return withDetail("Conflict");
      case 413:
        return withDetail("File too large");
      case 415:
        return withDetail("Unsupported file type");
      case 422:
        return withDetail("Invalid request");
      case 429: {
        const wait = isNum(retryAfter) ? ` Retry in ${retryAfter} s.` : " Retry shortly.";
        return withDetail("Too many requests") + wait;
      }
      case 503:
        return withDetail("The ML service (ml-api) is unavailable") +
          (isNum(retryAfter) && retryAfter > 0 ? ` Retry in ${retryAfter} s.` : "");
      default:
        return withDetail(`Request failed (HTTP ${status})`);
    }
  }

  async function errorFromResponse(res) {
    let detail = "";
    const text = await res.text().catch(() => "");
    if (text) {
      try {
        const body = JSON.parse(text);
        detail = body && typeof body === "object" && "detail" in body ? body.detail : body;
      } catch {
        detail = text.length > 300 ? `${text.slice(0, 300)}…` : text;
      }
    }
    if (!detail) detail = res.statusText;
    return new ApiError(res.status, detail, parseRetryAfter(res.headers.get("Retry-After")));
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json", ...authHeaders() };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new ApiError(0, "");
    }
    if (!res.ok) {
      const err = await errorFromResponse(res);
      if (res.status === 401) needAuth(detailText(err.detail));
      throw err;
    }
    if (res.status === 204) return null;
    const text = await res.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Documents: state, list and live status

  const docs = new Map(); // id -> latest document object
  const rows = new Map(); // id -> <tr>
  const watched = new Map(); // id -> Set of callbacks(doc)
  let offset = 0;
  let total = 0;

  const docSize = (d) => d.size ?? d.size_bytes ?? d.bytes;
  const docName = (d) => d.filename || d.name || (d.metadata && d.metadata.filename) || d.id || "untitled";

  function progressOf(d) {
    // The backend sends progress {chunks_done, chunks_total}; accept {done, total} too.
    const p = d.progress && typeof d.progress === "object" ? d.progress : {};
    const done = p.chunks_done ?? p.done ?? d.chunks_done;
    const totalChunks = p.chunks_total ?? p.total ?? d.chunks_total;
    return { done: isNum(done) ? done : null, total: isNum(totalChunks) ? totalChunks : null };
  }

  function chunkCount(d) {
    if (isNum(d.chunk_count)) return d.chunk_count;
    const p = progressOf(d);
    return d.status === "indexed" && p.total !== null ? p.total : null;
  }

  // The status cell: a badge, chunk progress while working, the reason when failed.
  function statusNode(d) {
    const status = String(d.status || "unknown");
    const wrap = h("div", { className: "status" });
    wrap.append(h("span", { className: `badge badge-${status.replace(/[^a-z]/g, "")}` }, status));
    const p = progressOf(d);
    if (IN_PROGRESS.has(status) && p.total) {
      wrap.append(
        h("span", { className: "status-detail" }, `${p.done ?? 0}/${p.total} chunks`),
        h("progress", { max: p.total, value: p.done ?? 0, "aria-label": `Chunks embedded for ${docName(d)}` }),
      );
    }
    if (status === "failed" && d.error) {
      wrap.append(h("span", { className: "status-error" }, detailText(d.error)));
    }
    return wrap;
  }

  function fillRow(tr, d) {
    const name = docName(d);
    const nameCell = tr.querySelector(".doc-name");
    nameCell.replaceChildren(h("span", { className: "doc-filename", title: name }, name));
    tr.querySelector(".doc-size").textContent = formatBytes(docSize(d));
    tr.querySelector(".doc-pages").textContent = isNum(d.pages) ? String(d.pages) : "—";
    const cc = chunkCount(d);
    tr.querySelector(".doc-chunks").textContent = cc === null ? "—" : String(cc);
    tr.querySelector(".doc-status").replaceChildren(statusNode(d));
    tr.querySelector(".doc-when").replaceChildren(timeNode(d.created_at || d.updated_at));
    const del = tr.querySelector(".doc-delete");
    del.setAttribute("aria-label", `Delete ${name}`);
    del.disabled = d.status === "deleting";
    tr.dataset.status = String(d.status || "");
  }

  function makeRow(d) {
    const tr = el.rowTemplate.content.firstElementChild.cloneNode(true);
    tr.dataset.id = d.id;
    tr.querySelector(".doc-delete").addEventListener("click", () => deleteDocument(d.id));
    fillRow(tr, d);
    return tr;
  }

  function renderEmptyState() {
    const empty = rows.size === 0;
    el.docsEmpty.hidden = !empty;
    el.docsEmpty.textContent = "No documents yet. Upload one above.";
    el.docsTable.hidden = empty;
    el.docsCount.textContent = total ? `(${total})` : "";
    const paged = total > PAGE_SIZE || offset > 0;
    el.pager.hidden = !paged;
    if (paged) {
      const first = total ? offset + 1 : 0;
      const last = Math.min(offset + rows.size, total);
      el.range.textContent = `${first}–${last} of ${total}`;
      el.prev.disabled = offset === 0;
      el.next.disabled = offset + PAGE_SIZE >= total;
    }
  }

  function listFrom(body) {
    if (Array.isArray(body)) return { items: body, total: body.length };
    if (body && Array.isArray(body.documents)) {
      return { items: body.documents, total: isNum(body.total) ? body.total : body.documents.length };
    }
    if (body && Array.isArray(body.items)) {
      return { items: body.items, total: isNum(body.total) ? body.total : body.items.length };
    }
    return { items: [], total: 0 };
  }

  let loadSeq = 0;
  async function loadDocuments() {
    const seq = ++loadSeq;
    let body;
    try {
      body = await api("GET", `documents?limit=${PAGE_SIZE}&offset=${offset}`);
    } catch (err) {
      if (seq !== loadSeq) return;
      if (rows.size === 0) {
        el.docsTable.hidden = true;
        el.docsEmpty.hidden = false;
        el.docsEmpty.textContent =
          err.status === 401 ? "Enter the API key above to see the documents." : "Could not load the documents.";
      }
      if (err.status !== 401) showMessage(`Could not load documents. ${err.message}`);
      return;
    }
    if (seq !== loadSeq) return; // a newer load is on its way
    const { items, total: t } = listFrom(body);
    if (items.length === 0 && offset > 0 && t > 0) {
      offset = Math.max(0, Math.floor((t - 1) / PAGE_SIZE) * PAGE_SIZE);
      loadDocuments();
      return;
    }
    total = t;
    const fresh = new Set();
    const frag = document.createDocumentFragment();
    for (const d of items) {
      if (!d || !d.id) continue;
      fresh.add(d.id);
      docs.set(d.id, d);
      let tr = rows.get(d.id);
      if (tr) fillRow(tr, d);
      else {
        tr = makeRow(d);
        rows.set(d.id, tr);
      }
      frag.append(tr);
      if (IN_PROGRESS.has(d.status)) watch(d.id);
    }
    for (const [id, tr] of rows) {
      if (!fresh.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    el.docsBody.replaceChildren(frag);
    renderEmptyState();
  }

  // A document seen via polling (or the upload answer): update its row, or reload the list
  // when it's new and we're on the first page.
  let reloadTimer = null;
  function documentSeen(d) {
    if (!d || !d.id) return;
    docs.set(d.id, d);
    const tr = rows.get(d.id);
    if (tr) fillRow(tr, d);
    else if (offset === 0) scheduleReload();
  }

  function scheduleReload(delay = 150) {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(loadDocuments, delay);
  }

  async function deleteDocument(id) {
    const d = docs.get(id) || { id };
    const name = docName(d);
    const busy = d.status && IN_PROGRESS.has(d.status) && d.status !== "deleting";
    const question = busy
      ? `Delete “${name}”? It is still being ingested; ingestion will be cancelled.`
      : `Delete “${name}” and all its passages from the index?`;
    if (!window.confirm(question)) return;
    const tr = rows.get(id);
    const btn = tr && tr.querySelector(".doc-delete");
    if (btn) btn.disabled = true;
    unwatch(id);
    try {
      await api("DELETE", `documents/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err.status !== 404) {
        if (btn) btn.disabled = false;
        showMessage(`Could not delete “${name}”. ${err.message}`);
        return;
      }
    }
    if (tr) {
      // Keep keyboard focus somewhere sensible.
      const next = tr.nextElementSibling || tr.previousElementSibling;
      const hadFocus = tr.contains(document.activeElement);
      tr.remove();
      rows.delete(id);
      if (hadFocus) {
        const target = next && next.querySelector(".doc-delete");
        (target || el.docsRefresh).focus();
      }
    }
    docs.delete(id);
    total = Math.max(0, total - 1);
    renderEmptyState();
    for (const u of uploads) if (u.docId === id) u.setIngest({ id, status: "deleted" });
    showMessage(`Deleted “${name}”.`, "info");
    scheduleReload(300);
  }

  el.docsRefresh.addEventListener("click", () => loadDocuments());
  el.prev.addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE_SIZE);
    loadDocuments();
  });
  el.next.addEventListener("click", () => {
    offset += PAGE_SIZE;
    loadDocuments();
  });

  // ---------------------------------------------------------------------------------------------
  // Polling GET /documents/{id} for everything in progress

  function watch(id, cb) {
    let set = watched.get(id);
    if (!set) {
      set = new Set();
      watched.set(id, set);
    }
    if (cb) set.add(cb);
    schedulePoll();
  }

  function unwatch(id) {
    watched.delete(id);
  }

  let pollTimer = null;
  let polling = false;
  let pollBackoffUntil = 0;

  function schedulePoll(delay) {
    if (pollTimer || polling || watched.size === 0) return;
    const wait = delay ?? (document.hidden ? POLL_HIDDEN_MS : POLL_MS);
    pollTimer = setTimeout(pollOnce, Math.max(wait, pollBackoffUntil - Date.now()));
  }

  async function pollOnce() {
    pollTimer = null;
    polling = true;
    const ids = [...watched.keys()];
    let finished = false;
    await Promise.all(
      ids.map(async (id) => {
        let d;
        try {
          d = await api("GET", `documents/${encodeURIComponent(id)}`);
        } catch (err) {
          if (err.status === 404) {
            notify(id, { id, status: "deleted" });
            unwatch(id);
            const tr = rows.get(id);
            if (tr) finished = true;
          } else if (err.status === 429 || err.status === 503) {
            pollBackoffUntil = Date.now() + 1000 * (err.retryAfter || 2);
          } else if (err.status === 401) {
            pollBackoffUntil = Date.now() + 5000;
          }
          return;
        }
        if (!d || typeof d !== "object") return;
        if (!d.id) d.id = id;
        notify(id, d);
        documentSeen(d);
        if (TERMINAL.has(d.status)) {
          unwatch(id);
          finished = true;
        }
      }),
    );
    polling = false;
    if (finished) scheduleReload(200);
    schedulePoll();
  }

  function notify(id, d) {
    const set = watched.get(id);
    if (set) for (const cb of set) cb(d);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && pollTimer) {
      clearTimeout(pollTimer);
      pollTimer = null;
      schedulePoll(0);
    }
  });

  // ---------------------------------------------------------------------------------------------
  // Uploads: one XMLHttpRequest per file so each has its own progress and its own error.

  const uploads = [];
  const queue = [];
  let active = 0;

  class Upload {
    constructor(file) {
      this.file = file;
      this.status = null; // HTTP status of the upload when it failed
      this.docId = null;
      this.done = false;
      this.bar = h("progress", { max: 100, value: 0, "aria-label": `Upload of ${file.name}` });
      this.text = h("span", { className: "upload-state" }, "waiting");
      this.retry = h("button", { type: "button", className: "btn btn-small", hidden: true }, "Retry");
      this.dismiss = h("button", { type: "button", className: "btn btn-quiet btn-small", "aria-label": `Remove ${file.name} from this list` }, "×");
      this.retry.addEventListener("click", () => this.start());
      this.dismiss.addEventListener("click", () => {
        // Move focus along so it isn't lost with the removed item.
        const next = this.node.nextElementSibling || this.node.previousElementSibling;
        this.remove();
        const target = next && next.querySelector("button");
        (target || el.fileInput).focus();
      });
      this.node = h("li", { className: "upload" },
        h("div", { className: "upload-head" },
          h("span", { className: "upload-name", title: file.name }, file.name),
          h("span", { className: "upload-size muted" }, formatBytes(file.size)),
          this.dismiss),
        h("div", { className: "upload-body" }, this.bar, this.text, this.retry));
      el.uploads.prepend(this.node);
      uploads.push(this);
    }

    setState(text, kind) {
      this.text.textContent = text;
      this.node.dataset.state = kind || "";
      updateClearButton();
    }

    remove() {
      this.node.remove();
      const i = uploads.indexOf(this);
      if (i >= 0) uploads.splice(i, 1);
      if (this.docId) unwatch(this.docId);
      updateClearButton();
    }

    start() {
      this.retry.hidden = true;
      this.status = null;
      this.bar.max = 100;
      this.bar.value = 0;
      this.setState("waiting", "waiting");
      queue.push(this);
      pump();
    }

    fail(status, message) {
      this.status = status;
      this.done = true;
      this.setState(message, "failed");
      this.bar.removeAttribute("value");
      this.bar.hidden = true;
      this.retry.hidden = !(status === 0 || status === 401 || status === 409 || status === 429 || status >= 500);
    }

    send() {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", "documents");
        xhr.responseType = "text";
        xhr.setRequestHeader("Accept", "application/json");
        for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
        this.bar.hidden = false;
        this.setState("uploading 0%", "uploading");
        xhr.upload.addEventListener("progress", (ev) => {
          if (!ev.lengthComputable) return;
          const pct = Math.floor((ev.loaded / ev.total) * 100);
          this.bar.value = pct;
          this.setState(`uploading ${pct}%`, "uploading");
        });
        xhr.upload.addEventListener("load", () => {
          this.bar.value = 100;
          this.setState("uploaded, waiting for the server…", "uploading");
        });
        xhr.addEventListener("load", () => {
          this.handleResponse(xhr);
          resolve();
        });
        xhr.addEventListener("error", () => {
          this.fail(0, describeError(0));
          resolve();
        });
        xhr.addEventListener("abort", () => {
          this.fail(0, "Upload cancelled.");
          resolve();
        });
        const form = new FormData();
        form.append("files", this.file, this.file.name);
        xhr.send(form);
      });
    }

    handleResponse(xhr) {
      let body = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status < 200 || xhr.status >= 300) {
        let detail = body && typeof body === "object" && "detail" in body ? body.detail : "";
        if (!detail && xhr.responseText && !body) detail = xhr.responseText.slice(0, 300);
        if (!detail) detail = xhr.statusText;
        const err = new ApiError(xhr.status, detail, parseRetryAfter(xhr.getResponseHeader("Retry-After")));
        if (xhr.status === 401) needAuth(detailText(detail));
        this.fail(xhr.status, err.message);
        return;
      }
      const doc = firstDocument(body);
      if (!doc || !doc.id) {
        this.fail(xhr.status, "Uploaded, but the server's answer had no document id.");
        return;
      }
      this.docId = doc.id;
      this.bar.max = 1;
      this.bar.value = 0;
      this.bar.removeAttribute("value"); // indeterminate until chunk totals are known
      this.duplicate = Boolean(doc.duplicate);
      this.setIngest(doc);
      documentSeen(doc);
      if (!TERMINAL.has(doc.status)) watch(doc.id, (d) => this.setIngest(d));
      else scheduleReload();
    }

    setIngest(d) {
      const status = String(d.status || "queued");
      const dup = this.duplicate ? " (already uploaded)" : "";
      const p = progressOf(d);
      if (status === "indexed") {
        this.done = true;
        this.bar.hidden = true;
        const cc = chunkCount(d);
        this.setState(`indexed${cc !== null ? `, ${plural(cc, "chunk")}` : ""}${dup}`, "indexed");
      } else if (status === "failed") {
        this.done = true;
        this.bar.hidden = true;
        this.setState(`failed${d.error ? `: ${detailText(d.error)}` : ""}`, "failed");
      } else if (status === "deleted") {
        this.done = true;
        this.bar.hidden = true;
        this.setState("deleted", "deleted");
      } else {
        this.bar.hidden = false;
        if (p.total) {
          this.bar.max = p.total;
          this.bar.value = p.done ?? 0;
          this.setState(`${status} ${p.done ?? 0}/${p.total} chunks${dup}`, status);
        } else {
          this.bar.removeAttribute("value");
          this.setState(`${status}${dup}`, status);
        }
      }
    }
  }

  // POST /documents answers {"documents": [...]}, but accept a list or a single object too.
  function firstDocument(body) {
    if (!body || typeof body !== "object") return null;
    if (Array.isArray(body)) return body[0] || null;
    if (Array.isArray(body.documents)) return body.documents[0] || null;
    if (body.document && typeof body.document === "object") return body.document;
    if (body.id) return body;
    return null;
  }

  const FINISHED = new Set(["indexed", "failed", "deleted"]);

  function updateClearButton() {
    el.uploadsClear.hidden = !uploads.some((u) => FINISHED.has(u.node.dataset.state));
  }

  el.uploadsClear.addEventListener("click", () => {
    for (const u of [...uploads]) if (FINISHED.has(u.node.dataset.state)) u.remove();
    el.fileInput.focus();
  });

  function pump() {
    while (active < UPLOAD_CONCURRENCY && queue.length) {
      const u = queue.shift();
      active += 1;
      u.send().finally(() => {
        active -= 1;
        pump();
      });
    }
  }

  function addFiles(fileList) {
    const files = [...(fileList || [])].filter((f) => f && typeof f.name === "string");
    for (const f of files) new Upload(f).start();
  }

  function retryFailedUploads(pred) {
    for (const u of uploads) if (u.status !== null && !u.docId && pred(u)) u.start();
  }

  el.fileInput.addEventListener("change", () => {
    addFiles(el.fileInput.files);
    el.fileInput.value = ""; // choosing the same file again fires change again
  });

  // Drag and drop: the whole window accepts drops, so a near miss doesn't navigate away.
  let dragDepth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes("Files");
  window.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth += 1;
    el.dropzone.classList.add("dragging");
  });
  window.addEventListener("dragover", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("dragleave", (ev) => {
    if (!hasFiles(ev)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) el.dropzone.classList.remove("dragging");
  });
  window.addEventListener("drop", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth = 0;
    el.dropzone.classList.remove("dragging");
    addFiles(ev.dataTransfer.files);
  });

  // ---------------------------------------------------------------------------------------------
  // Search

  const STOPWORDS = new Set(
    ("a an and are as at be but by can do does did for from had has have how i if in into is it its " +
      "me my no not of on or our so than that the their them then there these they this to was we " +
      "were what when where which who whom why will with you your").split(" "),
  );

  function queryTerms(q) {
    const words = q.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
    const terms = new Set();
    for (const w of words) {
      if (w.length < 2 || STOPWORDS.has(w)) continue;
      // A crude stem so "cats" also marks "cat", "indexing" marks "index".
      let stem = w;
      if (stem.length > 5 && /(ing|ed)$/.test(stem)) stem = stem.replace(/(ing|ed)$/, "");
      else if (stem.length > 3 && stem.endsWith("es")) stem = stem.slice(0, -2);
      else if (stem.length > 3 && stem.endsWith("s")) stem = stem.slice(0, -1);
      terms.add(stem);
    }
    return [...terms].sort((a, b) => b.length - a.length);
  }

  const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  function termRegExp(terms) {
    if (!terms.length) return null;
    const alt = terms.map(escapeRegExp).join("|");
    try {
      // Words that start with a term.
      return new RegExp(`(?<![\\p{L}\\p{N}])(?:${alt})[\\p{L}\\p{N}]*`, "giu");
    } catch {
      return new RegExp(`(?:${alt})`, "gi");
    }
  }

  // The passage as text nodes and <mark> elements: no HTML is ever parsed.
  function highlighted(text, re) {
    const frag = document.createDocumentFragment();
    if (!re) {
      frag.append(document.createTextNode(text));
      return frag;
    }
    re.lastIndex = 0;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      if (m[0].length === 0) {
        re.lastIndex += 1;
        continue;
      }
      if (m.index > last) frag.append(document.createTextNode(text.slice(last, m.index)));
      const mark = document.createElement("mark");
      mark.textContent = m[0];
      frag.append(mark);
      last = m.index + m[0].length;
    }
    if (last < text.length) frag.append(document.createTextNode(text.slice(last)));
    return frag;
  }

  function loadPrefs() {
    try {
      const p = JSON.parse(localStorage.getItem(PREFS_STORAGE) || "{}");
      if (typeof p.rerank === "boolean") el.rerankInput.checked = p.rerank;
      if (typeof p.mode === "string" && [...el.modeSelect.options].some((o) => o.value === p.mode)) {
        el.modeSelect.value = p.mode;
      }
      if (isNum(p.top_k)) el.topkInput.value = String(p.top_k);
      if (typeof p.grouped === "boolean") el.groupInput.checked = p.grouped;
      if (isNum(p.context) && [...el.contextSelect.options].some((o) => o.value === String(p.context))) {
        el.contextSelect.value = String(p.context);
      }
    } catch {
      // ignore broken prefs
    }
  }

  function savePrefs(prefs) {
    try {
      localStorage.setItem(PREFS_STORAGE, JSON.stringify(prefs));
    } catch {
      // ignore
    }
  }

  function resultPage(r) {
    const md = r.metadata || {};
    return r.page ?? md.page ?? md.page_number ?? null;
  }

  // The text of the context chunks before and after a hit, without the overlap neighbouring
  // chunks share: cut by their offsets when on the same page as the chunk next to them.
  function around(r) {
    const before = Array.isArray(r.context_before) ? r.context_before : [];
    const after = Array.isArray(r.context_after) ? r.context_after : [];
    let pre = "";
    before.forEach((c, i) => {
      const next = i + 1 < before.length ? before[i + 1] : r;
      pre += c.page === next.page ? c.text.slice(0, Math.max(0, next.start - c.start)) : c.text;
    });
    let post = "";
    let prev = r;
    for (const c of after) {
      post += c.page === prev.page ? c.text.slice(Math.max(0, prev.end - c.start)) : c.text;
      prev = c;
    }
    return [pre, post];
  }

  function renderResults(body, query, requested, clientMs) {
    const results = Array.isArray(body && body.results) ? body.results : Array.isArray(body) ? body : [];
    const re = termRegExp(queryTerms(query));
    const mode = (body && body.mode) || requested.mode || "server default";
    const reranked = body && typeof body.reranked === "boolean" ? body.reranked : null;

    const summary = [];
    summary.push(h("span", { className: "summary-count" }, plural(results.length, "result")));
    summary.push(h("span", { className: "chip" }, "mode: ", h("strong", null, mode)));
    let rerankText = reranked === null ? "unknown" : reranked ? "yes" : "no";
    if (requested.rerank && reranked === false) rerankText = "no (not available)";
    summary.push(h("span", { className: "chip" }, "reranked: ", h("strong", null, rerankText)));
    if (body && body.group_by === "document") {
      summary.push(h("span", { className: "chip" }, "one per ", h("strong", null, "document")));
    }
    if (body && typeof body.note === "string" && body.note) {
      summary.push(h("span", { className: "chip chip-note" }, body.note));
    }
    const timings = (body && body.timings_ms) || {};
    const stageOrder = ["embed", "search", "rerank", "total"];
    const stages = Object.keys(timings).sort((a, b) => {
      const ia = stageOrder.indexOf(a);
      const ib = stageOrder.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
    });
    const timingList = h("dl", { className: "timings", "aria-label": "Time per stage" });
    for (const s of stages) {
      if (!isNum(timings[s])) continue;
      timingList.append(h("div", { className: `timing timing-${s.replace(/[^a-z_]/gi, "")}` },
        h("dt", null, s), h("dd", null, formatMs(timings[s]))));
    }
    timingList.append(h("div", { className: "timing timing-client" },
      h("dt", null, "round trip"), h("dd", null, formatMs(clientMs))));
    el.summary.replaceChildren(h("div", { className: "summary-line" }, ...summary), timingList);

    const frag = document.createDocumentFragment();
    results.forEach((r, i) => {
      if (!r || typeof r !== "object") return;
      const text = typeof r.text === "string" ? r.text : "";
      const name = r.filename || (r.metadata && r.metadata.filename) || r.document_id || "unknown document";
      const page = resultPage(r);
      const scores = h("dl", { className: "scores" });
      const addScore = (label, v, cls) => {
        if (v === undefined) return;
        scores.append(h("div", { className: `score ${cls}` }, h("dt", null, label), h("dd", null, formatScore(v))));
      };
      addScore("score", r.score, "score-main");
      addScore("vector", r.vector_score, "score-vector");
      if (r.rerank_score !== undefined && r.rerank_score !== null) addScore("rerank", r.rerank_score, "score-rerank");
      else if (reranked) addScore("rerank", null, "score-rerank");

      const where = h("span", { className: "result-where" });
      where.append(h("span", { className: "result-file", title: name }, name));
      if (page !== null && page !== undefined) where.append(h("span", { className: "result-page" }, `page ${page}`));
      if (isNum(r.chunk_index)) where.append(h("span", { className: "result-chunk muted" }, `chunk ${r.chunk_index}`));
      if (isNum(r.matches)) {
        where.append(h("span", { className: "result-matches muted" }, plural(r.matches, "matching passage")));
      }

      const passage = h("p", { className: "result-text" });
      const [pre, post] = around(r);
      if (pre) passage.append(h("span", { className: "result-context" }, pre));
      const hit = pre || post ? h("span", { className: "result-hit" }) : passage;
      hit.append(highlighted(text, re));
      if (hit !== passage) passage.append(hit);
      if (post) passage.append(h("span", { className: "result-context" }, post));
      frag.append(
        h("li", { className: "result" },
          h("div", { className: "result-head" },
            h("span", { className: "result-rank", "aria-hidden": "true" }, String(i + 1)), where, scores),
          passage),
      );
    });
    el.results.replaceChildren(frag);
    if (!results.length) {
      el.results.append(h("li", { className: "result result-empty muted" },
        total === 0 && rows.size === 0 ? "No results: the index is empty. Upload a document first." : "No results."));
    }
  }

  let searchSeq = 0;
  el.searchForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const query = el.searchInput.value.trim();
    if (!query) {
      el.searchInput.focus();
      return;
    }
    let topK = Number.parseInt(el.topkInput.value, 10);
    if (!Number.isFinite(topK) || topK < 1) topK = 10;
    topK = Math.min(topK, 100);
    const requested = { query, top_k: topK, rerank: el.rerankInput.checked };
    const mode = el.modeSelect.value;
    if (mode) requested.mode = mode; // only when the user chose one
    // One result per document is what a person searching expects; the API's default is chunk.
    if (el.groupInput.checked) requested.group_by = "document";
    const context = Number.parseInt(el.contextSelect.value, 10) || 0;
    if (context > 0) requested.context = context;
    savePrefs({ rerank: requested.rerank, mode, top_k: topK, grouped: el.groupInput.checked, context });

    const seq = ++searchSeq;
    el.searchButton.disabled = true;
    el.searchForm.setAttribute("aria-busy", "true");
    el.summary.replaceChildren(h("span", { className: "muted" }, "Searching…"));
    const t0 = performance.now();
    try {
      const body = await api("POST", "query", requested);
      if (seq !== searchSeq) return;
      renderResults(body, query, requested, performance.now() - t0);
    } catch (err) {
      if (seq !== searchSeq) return;
      let msg = err.message;
      if (err.status === 422 && requested.mode && /mode/i.test(detailText(err.detail))) {
        msg = `The backend does not accept mode “${requested.mode}”: ${detailText(err.detail)}`;
      }
      el.summary.replaceChildren(h("span", { className: "error-text", role: "alert" }, `Search failed. ${msg}`));
      el.results.replaceChildren();
    } finally {
      if (seq === searchSeq) {
        el.searchButton.disabled = false;
        el.searchForm.removeAttribute("aria-busy");
      }
    }
  });

  // ---------------------------------------------------------------------------------------------
  // Start

  loadPrefs();
  loadDocuments();
  // Refresh relative times now and then.
  setInterval(() => {
    for (const [id, tr] of rows) {
      const d = docs.get(id);
      if (d) tr.querySelector(".doc-when").replaceChildren(timeNode(d.created_at || d.updated_at));
    }
  }, 60000);
})();
