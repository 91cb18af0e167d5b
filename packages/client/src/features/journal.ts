/**
 * The server's event journal (a log of every applied write): `read` pages through it,
 * `subscribe` streams it. Subscriptions survive reconnects: after each one the client asks for
 * the events after the last one it delivered, so none is missed or repeated (sequences are
 * decimal u64 strings, compared and incremented as BigInt).
 */
import type { Timestamp } from '../crdt/hlc.js';

export type JournalEventType = 'PUT' | 'UPDATE' | 'DELETE';

export interface JournalEvent {
  sequence: string;
  type: JournalEventType;
  mapName: string;
  key: string;
  value?: unknown;
  previousValue?: unknown;
  timestamp: Timestamp;
  nodeId: string;
  metadata?: Record<string, unknown>;
}

export interface JournalReadOptions {
  /** Inclusive start (decimal sequence); "0" = the oldest kept. */
  fromSequence?: string;
  limit?: number;
  mapName?: string;
}

export interface JournalSubscribeOptions {
  mapName?: string;
  types?: JournalEventType[];
  /** Replay from this sequence (inclusive) before going live; omitted = live only. */
  fromSequence?: string;
}

export interface JournalBackend {
  /** Send now if authenticated; false if not. */
  send(message: Record<string, unknown>): boolean;
  newRequestId(): string;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

interface Subscription {
  id: string;
  options: JournalSubscribeOptions;
  listener: (event: JournalEvent) => void;
  lastSequence: bigint | undefined;
}

const READ_TIMEOUT_MS = 10_000;
/** Subscriptions per client (the server allows 16 per connection). */
export const MAX_JOURNAL_SUBSCRIPTIONS = 16;

export class JournalManager {
  private readonly reads = new Map<string, { resolve: (r: { events: JournalEvent[]; hasMore: boolean }) => void; reject: (e: Error) => void; timer: unknown }>();
  private readonly subs = new Map<string, Subscription>();

  constructor(private readonly backend: JournalBackend) {}

  read(options: JournalReadOptions = {}): Promise<{ events: JournalEvent[]; hasMore: boolean }> {
    const requestId = this.backend.newRequestId();
    const message = { type: 'JOURNAL_READ', requestId, fromSequence: options.fromSequence ?? '0', limit: options.limit, mapName: options.mapName };
    return new Promise((resolve, reject) => {
      if (!this.backend.send(message)) {
        reject(new Error('journal read needs a connection to the server'));
        return;
      }
      const timer = this.backend.setTimer(() => {
        this.reads.delete(requestId);
        reject(new Error(`journal read got no answer within ${READ_TIMEOUT_MS} ms`));
      }, READ_TIMEOUT_MS);
      this.reads.set(requestId, { resolve, reject, timer });
    });
  }

  subscribe(options: JournalSubscribeOptions, listener: (event: JournalEvent) => void): () => void {
    if (this.subs.size >= MAX_JOURNAL_SUBSCRIPTIONS) throw new RangeError(`at most ${MAX_JOURNAL_SUBSCRIPTIONS} journal subscriptions`);
    const sub: Subscription = { id: this.backend.newRequestId(), options, listener, lastSequence: undefined };
    this.subs.set(sub.id, sub);
    this.sendSubscribe(sub);
    return () => {
      if (this.subs.delete(sub.id)) this.backend.send({ type: 'JOURNAL_UNSUBSCRIBE', subscriptionId: sub.id });
    };
  }

  /** After (re)authentication: subscriptions resume after the last delivered event. */
  ready(): void {
    for (const sub of this.subs.values()) this.sendSubscribe(sub);
  }

  message(msg: Record<string, unknown>): void {
    if (msg.type === 'JOURNAL_READ_RESPONSE') {
      const r = this.reads.get(String(msg.requestId));
      if (!r) return;
      this.reads.delete(String(msg.requestId));
      this.backend.clearTimer(r.timer);
      r.resolve({ events: (msg.events ?? []) as JournalEvent[], hasMore: msg.hasMore === true });
    } else if (msg.type === 'JOURNAL_EVENT') {
      const event = msg.event as JournalEvent | undefined;
      if (!event || typeof event.sequence !== 'string') return;
      let seq: bigint;
      try {
        seq = BigInt(event.sequence);
      } catch {
        return;
      }
      // Events carry no subscription id: deliver to every subscription whose filter matches.
      for (const sub of this.subs.values()) {
        if (sub.options.mapName !== undefined && sub.options.mapName !== event.mapName) continue;
        if (sub.options.types && !sub.options.types.includes(event.type)) continue;
        if (sub.lastSequence !== undefined && seq <= sub.lastSequence) continue; // replay overlap
        sub.lastSequence = seq;
        sub.listener(event);
      }
    }
  }

  /** The connection dropped: pending reads fail (subscriptions are re-sent on `ready`). */
  disconnected(): void {
    for (const [id, r] of this.reads) {
      this.backend.clearTimer(r.timer);
      r.reject(new Error('connection lost before the journal read was answered'));
      this.reads.delete(id);
    }
  }

  private sendSubscribe(sub: Subscription): void {
    const from = sub.lastSequence !== undefined ? (sub.lastSequence + 1n).toString() : sub.options.fromSequence;
    this.backend.send({ type: 'JOURNAL_SUBSCRIBE', requestId: sub.id, fromSequence: from, mapName: sub.options.mapName, types: sub.options.types });
  }
}

/** A journal event as TopGun's reader hands it out: the sequence as a `bigint`. */
export type EventJournalEvent = Omit<JournalEvent, 'sequence'> & { sequence: bigint };

export interface EventJournalSubscribeOptions {
  mapName?: string;
  types?: JournalEventType[];
  /** Replay from this sequence (inclusive) before going live; omitted = live only. */
  fromSequence?: bigint | string;
}

function toReaderEvent(e: JournalEvent): EventJournalEvent {
  return { ...e, sequence: BigInt(e.sequence) };
}

/**
 * TopGun's event-journal reader (`client.getEventJournal()`), over our `JournalManager`
 * (`client.journal`, which keeps sequences as decimal strings).
 */
export class EventJournalReader {
  constructor(private readonly journal: JournalManager) {}

  /** Stream events (replayed from `fromSequence` first, if given). Returns an unsubscribe function. */
  subscribe(listener: (event: EventJournalEvent) => void, options: EventJournalSubscribeOptions = {}): () => void {
    const from = options.fromSequence === undefined ? undefined : String(options.fromSequence);
    return this.journal.subscribe({ mapName: options.mapName, types: options.types, fromSequence: from }, (e) => listener(toReaderEvent(e)));
  }

  /** Events from `sequence` (inclusive), at most `limit` (server default 100, at most 1,000). */
  async readFrom(sequence: bigint | string | number, limit = 100, mapName?: string): Promise<EventJournalEvent[]> {
    const r = await this.journal.read({ fromSequence: String(sequence), limit, mapName });
    return r.events.map(toReaderEvent);
  }

  /** The last `limit` events (or fewer), oldest first. */
  async readLatest(limit = 100, mapName?: string): Promise<EventJournalEvent[]> {
    const latest = await this.getLatestSequence(mapName);
    if (latest < 0n || limit <= 0) return [];
    // Sequences are shared by all maps: widen the span back from the latest until it holds enough.
    for (let span = BigInt(limit); ; span *= 2n) {
      const from = latest - span + 1n < 0n ? 0n : latest - span + 1n;
      const events: EventJournalEvent[] = [];
      let next = from;
      for (;;) {
        const page = await this.journal.read({ fromSequence: next.toString(), limit: 1000, mapName });
        for (const e of page.events) if (BigInt(e.sequence) <= latest) events.push(toReaderEvent(e));
        const last = page.events.at(-1);
        if (!page.hasMore || last === undefined || BigInt(last.sequence) >= latest) break;
        next = BigInt(last.sequence) + 1n;
      }
      if (events.length >= limit || from === 0n) return events.slice(-limit);
    }
  }

  /**
   * The sequence of the newest event this reader may see (-1n when there is none). The server
   * has no request for it, so this probes with one-event reads: doubling steps, then a binary
   * search — about 2·log₂(n) round trips.
   */
  async getLatestSequence(mapName?: string): Promise<bigint> {
    const first = async (from: bigint): Promise<bigint | undefined> => {
      const r = await this.journal.read({ fromSequence: from.toString(), limit: 1, mapName });
      const e = r.events[0];
      return e === undefined ? undefined : BigInt(e.sequence);
    };
    let lo = await first(0n);
    if (lo === undefined) return -1n;
    // lo: a sequence that exists. Find hi with nothing at or after it.
    let step = 1n;
    let hi = lo + step;
    for (;;) {
      const at = await first(hi);
      if (at === undefined) break;
      lo = at;
      step *= 2n;
      hi = lo + step;
    }
    // Invariant: an event at lo, none at or after hi.
    while (hi - lo > 1n) {
      const mid = (lo + hi) / 2n;
      const at = await first(mid);
      if (at === undefined) hi = mid;
      else lo = at;
      if (lo >= hi) break;
    }
    return lo;
  }

  /** Events of one map (TopGun's `onMapChanges`). */
  onMapChanges(mapName: string, listener: (event: EventJournalEvent) => void): () => void {
    return this.subscribe(listener, { mapName });
  }
}
