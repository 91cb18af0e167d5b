/**
 * Hybrid logical clock (PROTOCOL.md §2.1). Wall-clock time is injected so that tests are exact
 * and the sync engine stays free of I/O.
 */

export interface Timestamp {
  millis: number;
  counter: number;
  nodeId: string;
}

const U32_MAX = 0xffffffff;

/** Total order: millis, then counter, then nodeId by code units (ASCII ids order like bytes). */
export function compareTimestamps(a: Timestamp, b: Timestamp): number {
  if (a.millis !== b.millis) return a.millis < b.millis ? -1 : 1;
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  if (a.nodeId === b.nodeId) return 0;
  return a.nodeId < b.nodeId ? -1 : 1;
}

/** `"<millis>:<counter>:<nodeId>"`: the OR-Map tag format and a hash input. */
export function timestampToString(ts: Timestamp): string {
  return `${ts.millis}:${ts.counter}:${ts.nodeId}`;
}

export function parseTimestamp(text: string): Timestamp {
  const parts = text.split(':');
  if (parts.length !== 3 || parts[2] === '') throw new Error(`not a timestamp string: ${text}`);
  const millis = Number(parts[0]);
  const counter = Number(parts[1]);
  if (!Number.isSafeInteger(millis) || !Number.isSafeInteger(counter) || millis < 0 || counter < 0) {
    throw new Error(`not a timestamp string: ${text}`);
  }
  return { millis, counter, nodeId: parts[2] as string };
}

export function isTimestamp(value: unknown): value is Timestamp {
  if (value === null || typeof value !== 'object') return false;
  const t = value as Record<string, unknown>;
  return (
    typeof t.millis === 'number' &&
    Number.isFinite(t.millis) &&
    typeof t.counter === 'number' &&
    Number.isFinite(t.counter) &&
    typeof t.nodeId === 'string'
  );
}

export class HLC {
  private lastMillis = 0;
  private lastCounter = 0;

  constructor(
    readonly nodeId: string,
    private readonly wallClock: () => number = Date.now,
  ) {
    if (nodeId.includes(':') || nodeId === '') {
      throw new Error(`node id must be non-empty and free of ':' (got ${JSON.stringify(nodeId)})`);
    }
  }

  /** A fresh timestamp, strictly greater than every one this clock issued or observed. */
  now(): Timestamp {
    const wall = this.wallClock();
    if (wall > this.lastMillis) {
      this.lastMillis = wall;
      this.lastCounter = 0;
    } else if (this.lastCounter >= U32_MAX) {
      // The server's counter is a u32: move to the next millisecond instead of overflowing.
      this.lastMillis += 1;
      this.lastCounter = 0;
    } else {
      this.lastCounter += 1;
    }
    return { millis: this.lastMillis, counter: this.lastCounter, nodeId: this.nodeId };
  }

  /** Observe a remote timestamp so that later local ones order after it. */
  update(remote: Timestamp): void {
    if (!isTimestamp(remote)) return;
    const wall = this.wallClock();
    const max = Math.max(this.lastMillis, wall, remote.millis);
    const localHas = max === this.lastMillis;
    const remoteHas = max === remote.millis;
    if (localHas && remoteHas) this.lastCounter = Math.max(this.lastCounter, remote.counter) + 1;
    else if (localHas) this.lastCounter += 1;
    else if (remoteHas) this.lastCounter = remote.counter + 1;
    else this.lastCounter = 0;
    this.lastMillis = max;
  }
}
