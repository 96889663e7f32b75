// The console's ledger explorer: check one entry in this browser, trusting no verdict of the server.
// Fetches the signed checkpoint (/tlog/checkpoint) and the entry's inclusion proof, recomputes the leaf
// hash and the root (RFC 9162: SHA-256, 0x00 leaf and 0x01 node prefixes) with WebCrypto, and checks the
// checkpoint's Ed25519 signature (C2SP signed note) with WebCrypto against the log key in the page's
// input, which the reader may replace with the one they hold.
"use strict";

(function () {
  const section = document.getElementById("verify");
  const button = document.getElementById("verify-button");
  if (!section || !button) return;
  const result = document.getElementById("verify-result");
  const steps = document.getElementById("verify-steps");
  const enc = new TextEncoder();

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  function unhex(s) {
    if (typeof s !== "string" || !/^(?:[0-9a-f]{2})*$/.test(s)) throw new Error("a proof hash is not hex");
    return Uint8Array.from(s.match(/../g) || [], (x) => parseInt(x, 16));
  }
  function unbase64(s) {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw new Error("not base64");
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  }
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

  // RFC 9162 section 2.1.3.2: the root an inclusion proof leads to.
  async function rootFromInclusion(index, size, leaf, proof) {
    if (!(index >= 0 && index < size)) throw new Error("the entry is not in the tree of that size");
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (p.length !== 32) throw new Error("a proof hash is not 32 bytes");
      if (sn === 0) throw new Error("the proof is too long");
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error("the proof is too short");
    return r;
  }

  // A C2SP note verifier key: NAME+HEXID+BASE64(0x01 || Ed25519 public key).
  async function parseVkey(text) {
    // the name holds no "+", the id is hex; the base64 key may hold "+" itself: split at the first two only
    const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]+=*)$/.exec(text.trim());
    if (!m) throw new Error("the log key is not NAME+KEYID+KEY");
    const [, name, id, blob] = m;
    const raw = unbase64(blob);
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("the log key is not an Ed25519 note key");
    const keyId = (await sha256(concat(enc.encode(name + "\n"), raw))).slice(0, 4);
    if (hex(keyId) !== id) throw new Error("the log key's id does not match its name and key");
    return { name, keyId, key: await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]) };
  }

  // A C2SP checkpoint whose signature by `vkey` verifies: { size, root }; throws otherwise.
  async function verifiedCheckpoint(text, vkey) {
    const cut = text.indexOf("\n\n");
    if (cut < 0) throw new Error("the checkpoint has no signatures");
    const body = text.slice(0, cut + 1);
    const lines = body.split("\n");
    if (lines.length < 4 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("the checkpoint is malformed");
    const root = unbase64(lines[2]);
    if (root.length !== 32) throw new Error("the checkpoint's root is not 32 bytes");
    for (const line of text.slice(cut + 2).split("\n")) {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m || m[1] !== vkey.name) continue;
      const raw = unbase64(m[2]);
      if (raw.length !== 68 || !equal(raw.slice(0, 4), vkey.keyId)) continue;
      const ok = await crypto.subtle.verify({ name: "Ed25519" }, vkey.key, raw.slice(4), enc.encode(body));
      if (!ok) throw new Error("the log's signature on the checkpoint does not check");
      return { origin: lines[0], size: Number(lines[1]), root };
    }
    throw new Error("the checkpoint carries no signature by this log key");
  }

  function step(text) {
    const li = document.createElement("li");
    li.textContent = text;
    steps.appendChild(li);
  }
  function verdict(ok, text) {
    result.textContent = text;
    result.className = ok ? "pass" : "fail";
    section.dataset.state = ok ? "verified" : "failed";
  }

  async function check() {
    const seq = Number(section.dataset.seq);
    const vkey = await parseVkey(document.getElementById("vkey").value);
    let cp = null;
    const latest = await fetch(section.dataset.checkpoint, { cache: "no-store" });
    if (latest.ok) {
      cp = await verifiedCheckpoint(await latest.text(), vkey);
      step(`Checkpoint: ${cp.size} entries, signature by ${vkey.name} checks.`);
    }
    const url = cp && cp.size > seq ? `${section.dataset.proof}?size=${cp.size}` : section.dataset.proof;
    const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error(`the server gave no proof (HTTP ${r.status})`);
    const p = await r.json();
    if (p.seq !== seq) throw new Error("the proof is for another entry");
    if (!cp || p.tree_size !== cp.size) {
      if (typeof p.checkpoint !== "string") throw new Error("no signed checkpoint covers the entry");
      cp = await verifiedCheckpoint(p.checkpoint, vkey);
      step(`Checkpoint: ${cp.size} entries, signature by ${vkey.name} checks.`);
    }
    if (p.tree_size !== cp.size) throw new Error("the proof is against another tree size");
    const leaf = await leafHash(enc.encode(p.entry));
    step(`Leaf hash of the entry's bytes: ${hex(leaf)}`);
    const root = await rootFromInclusion(seq, cp.size, leaf, p.proof.map(unhex));
    step(`Root from ${p.proof.length} proof hashes: ${hex(root)}`);
    if (!equal(root, cp.root)) throw new Error("the entry and its proof do not lead to the signed root");
    return cp;
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    steps.textContent = "";
    result.textContent = "checking\u2026";
    result.className = "muted";
    delete section.dataset.state;
    try {
      const cp = await check();
      verdict(true, `verified: entry ${section.dataset.seq} is in the log of ${cp.size} entries signed by ${cp.origin}`);
    } catch (e) {
      verdict(false, `failed: ${e && e.message ? e.message : e}`);
    } finally {
      button.disabled = false;
    }
  });
})();
