/** PN counter (PROTOCOL.md §4.10): per-node positive and negative totals, merged by maximum. */

export interface PNCounterState {
  p: Record<string, number>;
  n: Record<string, number>;
}

/** Read a state in either spelling the server may use (`p`/`n` or `positive`/`negative`). */
export function readCounterState(raw: unknown): PNCounterState {
  const o = (raw ?? {}) as Record<string, unknown>;
  const side = (a: unknown, b: unknown): Record<string, number> => {
    const src = (a ?? b ?? {}) as Record<string, unknown>;
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(src)) if (typeof v === 'number' && Number.isFinite(v)) out[k] = v;
    return out;
  };
  return { p: side(o.p, o.positive), n: side(o.n, o.negative) };
}

export class PNCounter {
  private state: PNCounterState = { p: {}, n: {} };

  constructor(private readonly nodeId: string) {}

  get value(): number {
    let v = 0;
    for (const x of Object.values(this.state.p)) v += x;
    for (const x of Object.values(this.state.n)) v -= x;
    return v;
  }

  add(delta: number): void {
    if (!Number.isFinite(delta)) throw new Error('counter delta must be finite');
    const side = delta >= 0 ? this.state.p : this.state.n;
    side[this.nodeId] = (side[this.nodeId] ?? 0) + Math.abs(delta);
  }

  /** Merge by per-node maximum; returns true if the value or state changed. */
  merge(other: PNCounterState): boolean {
    let changed = false;
    for (const side of ['p', 'n'] as const) {
      for (const [node, v] of Object.entries(other[side])) {
        if (v > (this.state[side][node] ?? 0)) {
          this.state[side][node] = v;
          changed = true;
        }
      }
    }
    return changed;
  }

  getState(): PNCounterState {
    return { p: { ...this.state.p }, n: { ...this.state.n } };
  }
}
