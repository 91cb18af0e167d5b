/**
 * The client's hashes (PROTOCOL.md §3.1-§3.2, §3.8). They must equal the server's bit for bit:
 * the Merkle roots the server reports are compared with the ones computed here.
 */

/** 32-bit FNV-1a over UTF-16 code units (not UTF-8 bytes: JS `charCodeAt`, like the server). */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** MurmurHash3's fmix32 finalizer; `mix(0) === 0`, which keeps empty nodes neutral. */
export function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Order-independent combination: the wrapping sum of mixed hashes. */
export function combine(hashes: Iterable<number>): number {
  let sum = 0;
  for (const h of hashes) sum = (sum + mix(h)) >>> 0;
  return sum;
}

export const PARTITION_COUNT = 271;

/** The partition a key lives in on the server. */
export function partitionId(key: string): number {
  return fnv1a(key) % PARTITION_COUNT;
}
