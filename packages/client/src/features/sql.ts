/**
 * SQL queries (`SQL_QUERY{sql, queryId}` → `SQL_QUERY_RESP{queryId, columns, rows, error?,
 * code?}`), matched by `queryId` because answers may come out of request order. A query waits
 * for an authenticated connection; one sent on a connection that drops is sent again on the
 * next (a query changes nothing, so repeating it is safe). The timeout is the last resort:
 * the server answers every query, even with SQL off (COMPAT §4.4).
 */
import { SqlError, TimeoutError } from '../errors.js';

export interface SqlResult {
  columns: string[];
  rows: unknown[][];
}

export interface SqlBackend {
  isReady(): boolean;
  send(message: { type: 'SQL_QUERY'; payload: { sql: string; queryId: string } }): void;
  newRequestId(): string;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

interface Pending {
  sql: string;
  sent: boolean;
  timer: unknown;
  resolve: (r: SqlResult) => void;
  reject: (e: Error) => void;
}

/** SQL queries waiting for an answer: beyond it `sql()` rejects at once. */
export const MAX_PENDING_SQL_QUERIES = 1024;

export const DEFAULT_SQL_TIMEOUT_MS = 30_000;

export class SqlManager {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly backend: SqlBackend) {}

  get size(): number {
    return this.pending.size;
  }

  query(sql: string, timeoutMs = DEFAULT_SQL_TIMEOUT_MS): Promise<SqlResult> {
    if (typeof sql !== 'string') return Promise.reject(new TypeError('sql must be a string'));
    if (!(timeoutMs > 0)) return Promise.reject(new RangeError('timeoutMs must be positive'));
    if (this.pending.size >= MAX_PENDING_SQL_QUERIES) {
      return Promise.reject(new RangeError(`${MAX_PENDING_SQL_QUERIES} SQL queries already wait for an answer; nothing was sent`));
    }
    const queryId = this.backend.newRequestId();
    return new Promise((resolve, reject) => {
      const p: Pending = { sql, sent: false, timer: undefined, resolve, reject };
      p.timer = this.backend.setTimer(() => {
        if (this.pending.get(queryId) !== p) return;
        this.pending.delete(queryId);
        reject(new TimeoutError(`SQL query ${queryId} not answered within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(queryId, p);
      this.sendOne(queryId, p);
    });
  }

  /** `SQL_QUERY_RESP`. */
  message(payload: Record<string, unknown>): void {
    const queryId = String(payload.queryId);
    const p = this.pending.get(queryId);
    if (!p) return; // timed out already, or not ours
    this.pending.delete(queryId);
    this.backend.clearTimer(p.timer);
    if (typeof payload.error === 'string' || typeof payload.code === 'string') {
      const code = typeof payload.code === 'string' ? payload.code : 'SQL_ERROR';
      const message = typeof payload.error === 'string' ? payload.error : `SQL query failed (${code})`;
      p.reject(new SqlError(code, message, queryId));
      return;
    }
    const columns = Array.isArray(payload.columns) ? payload.columns.map(String) : [];
    const rows = Array.isArray(payload.rows) ? (payload.rows.filter(Array.isArray) as unknown[][]) : [];
    p.resolve({ columns, rows });
  }

  /** A connection is authenticated: send what waits. */
  ready(): void {
    for (const [id, p] of this.pending) this.sendOne(id, p);
  }

  /** The connection dropped: its answers are lost, so every query is sent again when ready. */
  disconnected(): void {
    for (const p of this.pending.values()) p.sent = false;
  }

  /** Reject every waiting query (the client is closing, or cannot send SQL). */
  rejectAll(error: (queryId: string) => Error): void {
    for (const [id, p] of this.pending) {
      this.backend.clearTimer(p.timer);
      p.reject(error(id));
    }
    this.pending.clear();
  }

  private sendOne(queryId: string, p: Pending): void {
    if (p.sent || !this.backend.isReady()) return;
    p.sent = true;
    this.backend.send({ type: 'SQL_QUERY', payload: { sql: p.sql, queryId } });
  }
}
