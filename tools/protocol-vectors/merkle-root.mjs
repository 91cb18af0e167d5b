// Computes the Merkle root and root buckets a TopGun TypeScript client holds for a data set,
// the way the client computes them (PROTOCOL.md §3.1-§3.6), so that a test can check that a
// server reports the same values for the same data.
//
// Input (stdin, JSON):
//   { "lww": [{ "key", "millis", "counter", "nodeId" }],
//     "or":  [{ "key", "records": [{ "tag", "value", "millis", "counter", "nodeId", "ttlMs"? }] }] }
//   (`records` are the key's live records; a key without any is not in the client's tree)
// Output (stdout, JSON):
//   { "lww": { "root", "buckets": { hexDigit: hash } }, "or": { "root", "buckets" } }
//
// Plain JavaScript on purpose: string hashing over UTF-16 code units, `Math.imul` arithmetic,
// `String()` and `JSON.stringify` with an allow-list are the client's own semantics here.

const DEPTH = 3;

function fnv1a(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

function mix(h) {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function combine(hashes) {
  let sum = 0;
  for (const h of hashes) sum = (sum + mix(h)) >>> 0;
  return sum;
}

// A trie over the first DEPTH hex digits of fnv1a(key); nodes are created on insert.
function buildTree(items) {
  const root = { children: new Map(), items: new Map() };
  for (const [key, itemHash] of items) {
    const path = fnv1a(key).toString(16).padStart(8, '0');
    let node = root;
    for (let level = 0; level < DEPTH; level++) {
      const digit = path[level];
      if (!node.children.has(digit)) node.children.set(digit, { children: new Map(), items: new Map() });
      node = node.children.get(digit);
    }
    node.items.set(key, itemHash);
  }
  const hashOf = (node, level) =>
    level === DEPTH
      ? combine(node.items.values())
      : combine([...node.children.values()].map((child) => hashOf(child, level + 1)));
  const buckets = {};
  for (const [digit, child] of root.children) buckets[digit] = hashOf(child, 1);
  return { root: hashOf(root, 0), buckets };
}

function valueStr(value) {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'object') return JSON.stringify(value, Object.keys(value).sort());
  return String(value);
}

function orEntryHash(key, records) {
  let text = `key:${key}`;
  const sorted = [...records].sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
  for (const r of sorted) {
    text += `|${r.tag}:${valueStr(r.value)}:${r.millis}:${r.counter}:${r.nodeId}`;
    if (r.ttlMs !== undefined) text += `:ttl=${r.ttlMs}`;
  }
  return fnv1a(text);
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => (input += chunk));
process.stdin.on('end', () => {
  const data = JSON.parse(input);
  const lww = (data.lww ?? []).map((r) => [r.key, fnv1a(`${r.key}:${r.millis}:${r.counter}:${r.nodeId}`)]);
  // The client drops a key from its tree once its last record is removed.
  const or = (data.or ?? [])
    .filter((e) => e.records.length > 0)
    .map((e) => [e.key, orEntryHash(e.key, e.records)]);
  process.stdout.write(JSON.stringify({ lww: buildTree(lww), or: buildTree(or) }));
});
