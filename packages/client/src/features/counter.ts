/** A PN counter replica: local increments apply at once and are synced as the full state. */
import { PNCounter, readCounterState, type PNCounterState } from '../crdt/pn-counter.js';

export interface CounterBackend {
  sync(state: PNCounterState): void;
  persist(state: PNCounterState): void;
}

export class CounterHandle {
  /** TopGun's counter name is `getName()` as well as `name`. */
  getName(): string {
    return this.name;
  }

  private readonly crdt: PNCounter;
  private readonly listeners = new Set<(value: number) => void>();

  constructor(
    readonly name: string,
    nodeId: string,
    private readonly backend: CounterBackend,
  ) {
    this.crdt = new PNCounter(nodeId);
  }

  get value(): number {
    return this.crdt.value;
  }

  /** TopGun's name for `value`. */
  get(): number {
    return this.crdt.value;
  }

  /** TopGun's name for `add`: adds `delta` and returns the new value. */
  addAndGet(delta: number): number {
    return this.add(delta);
  }

  /** The CRDT state (per-node positive and negative sums). */
  getState(): PNCounterState {
    return this.crdt.getState();
  }

  increment(by = 1): number {
    return this.add(by);
  }

  decrement(by = 1): number {
    return this.add(-by);
  }

  add(delta: number): number {
    this.crdt.add(delta);
    const state = this.crdt.getState();
    this.backend.persist(state);
    this.backend.sync(state);
    this.notify();
    return this.crdt.value;
  }

  subscribe(listener: (value: number) => void): () => void {
    this.listeners.add(listener);
    listener(this.crdt.value);
    return () => this.listeners.delete(listener);
  }

  /** @internal A state from the server (either spelling). */
  merge(raw: unknown): void {
    if (this.crdt.merge(readCounterState(raw))) {
      this.backend.persist(this.crdt.getState());
      this.notify();
    }
  }

  /** @internal A state read back from local storage. */
  restore(raw: unknown): void {
    if (this.crdt.merge(readCounterState(raw))) this.notify();
  }

  /** @internal After reconnecting: offline increments reach the server. */
  resync(): void {
    const state = this.crdt.getState();
    if (Object.keys(state.p).length + Object.keys(state.n).length > 0) this.backend.sync(state);
  }

  private notify(): void {
    for (const l of [...this.listeners]) l(this.crdt.value);
  }
}
