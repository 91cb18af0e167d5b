/**
 * The depth-3 hex Merkle trie a map is synced with (PROTOCOL.md §3.3). A key routes by the first
 * three hex digits of `fnv1a(key)`; a leaf's hash is `combine` of its items, an inner node's is
 * `combine` of its children. Hashes are kept as running sums and updated along one path per
 * change, so a write costs O(depth) and the root is always current.
 */
import { combine, fnv1a, mix } from './hash.js';

export const MERKLE_DEPTH = 3;

interface Node {
  hash: number;
  children: Map<string, Node> | null; // null at a leaf
  items: Map<string, number> | null; // key → item hash, leaves only
}

function newNode(leaf: boolean): Node {
  return { hash: 0, children: leaf ? null : new Map(), items: leaf ? new Map() : null };
}

/** The routing path of a key: fnv1a as 8 lowercase hex digits. */
export function keyPath(key: string): string {
  return fnv1a(key).toString(16).padStart(8, '0');
}

export class MerkleTree {
  private readonly root: Node = newNode(false);
  private size = 0;

  get rootHash(): number {
    return this.root.hash;
  }

  get itemCount(): number {
    return this.size;
  }

  /** Insert or replace the item hash of `key`. */
  update(key: string, itemHash: number): void {
    this.apply(key, itemHash >>> 0);
  }

  remove(key: string): void {
    this.apply(key, undefined);
  }

  private apply(key: string, itemHash: number | undefined): void {
    const path = keyPath(key);
    const trail: Node[] = [this.root];
    let node = this.root;
    for (let level = 0; level < MERKLE_DEPTH; level++) {
      const digit = path[level] as string;
      let child = node.children!.get(digit);
      if (!child) {
        if (itemHash === undefined) return; // nothing to remove
        // Nodes are never removed once created (the client's tree behaves the same way).
        child = newNode(level === MERKLE_DEPTH - 1);
        node.children!.set(digit, child);
      }
      node = child;
      trail.push(node);
    }
    const items = node.items!;
    const old = items.get(key);
    if (old === itemHash) return;
    if (itemHash === undefined) {
      items.delete(key);
      this.size -= 1;
    } else {
      items.set(key, itemHash);
      if (old === undefined) this.size += 1;
    }
    // Leaf: add the new item's mix, subtract the old one's. Above: the same with child hashes.
    let before = node.hash;
    node.hash = (node.hash - (old === undefined ? 0 : mix(old)) + (itemHash === undefined ? 0 : mix(itemHash))) >>> 0;
    let after = node.hash;
    for (let i = trail.length - 2; i >= 0; i--) {
      const parent = trail[i] as Node;
      const parentBefore = parent.hash;
      parent.hash = (parent.hash - mix(before) + mix(after)) >>> 0;
      before = parentBefore;
      after = parent.hash;
    }
  }

  private find(path: string): Node | undefined {
    if (!/^[0-9a-f]{0,3}$/.test(path)) throw new Error(`bad Merkle path: ${JSON.stringify(path)}`);
    let node: Node | undefined = this.root;
    for (const digit of path) {
      node = node.children?.get(digit);
      if (!node) return undefined;
    }
    return node;
  }

  /** Hash of the node at `path` ("" = root); 0 if it does not exist. */
  nodeHash(path: string): number {
    return this.find(path)?.hash ?? 0;
  }

  /** `{hexDigit: childHash}` of the inner node at `path`. */
  getBuckets(path: string): Record<string, number> {
    const node = this.find(path);
    const out: Record<string, number> = {};
    if (!node?.children) return out;
    for (const [digit, child] of node.children) out[digit] = child.hash;
    return out;
  }

  /** Keys under `path` (a leaf or any inner node). */
  getKeysUnder(path: string): string[] {
    const node = this.find(path);
    const out: string[] = [];
    const walk = (n: Node): void => {
      if (n.items) for (const k of n.items.keys()) out.push(k);
      else for (const c of n.children!.values()) walk(c);
    };
    if (node) walk(node);
    return out;
  }

  /** The root recomputed from scratch: the invariant checked by tests. */
  recomputedRoot(): number {
    const hashOf = (n: Node): number =>
      n.items ? combine(n.items.values()) : combine([...n.children!.values()].map(hashOf));
    return hashOf(this.root);
  }

  clear(): void {
    this.root.children!.clear();
    this.root.hash = 0;
    this.size = 0;
  }
}
