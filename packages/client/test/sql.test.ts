/** SQL queries matched by queryId, re-sent after a dropped connection, timed out as a last resort. */
import { describe, expect, it } from 'vitest';
import { SqlError, TimeoutError } from '../src/errors.js';
import { SqlManager, type SqlBackend } from '../src/features/sql.js';

function fixture(ready = true) {
  const sent: { sql: string; queryId: string }[] = [];
  const timers: (() => void)[] = [];
  let n = 0;
  const backend: SqlBackend = {
    isReady: () => ready,
    send: (m) => sent.push(m.payload),
    newRequestId: () => `s${++n}`,
    setTimer: (fn) => timers.push(fn),
    clearTimer: () => undefined,
  };
  return { manager: new SqlManager(backend), sent, timers, setReady: (r: boolean) => (ready = r) };
}

describe('SQL queries', () => {
  it('answers are matched by queryId, in any order', async () => {
    const f = fixture();
    const a = f.manager.query('SELECT a FROM m');
    const b = f.manager.query('SELECT b FROM m');
    expect(f.sent).toEqual([
      { sql: 'SELECT a FROM m', queryId: 's1' },
      { sql: 'SELECT b FROM m', queryId: 's2' },
    ]);
    f.manager.message({ queryId: 's2', columns: ['b'], rows: [[2]] });
    f.manager.message({ queryId: 's1', columns: ['a'], rows: [[1], [3]] });
    await expect(a).resolves.toEqual({ columns: ['a'], rows: [[1], [3]] });
    await expect(b).resolves.toEqual({ columns: ['b'], rows: [[2]] });
    expect(f.manager.size).toBe(0);
  });

  it('an error answer rejects with SqlError carrying the server code and message', async () => {
    const f = fixture();
    const q = f.manager.query('SELECT 1');
    f.manager.message({ queryId: 's1', columns: [], rows: [], error: 'SQL is not available: off', code: 'FEATURE_DISABLED' });
    const err = await q.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SqlError);
    expect(err).toMatchObject({ code: 'FEATURE_DISABLED', message: 'SQL is not available: off', queryId: 's1' });
  });

  it('waits for a connection, and sends again after the connection drops', () => {
    const f = fixture(false);
    void f.manager.query('SELECT 1');
    expect(f.sent).toEqual([]);
    f.setReady(true);
    f.manager.ready();
    f.manager.ready(); // once per connection
    expect(f.sent).toHaveLength(1);
    f.manager.disconnected();
    f.manager.ready();
    expect(f.sent).toEqual([
      { sql: 'SELECT 1', queryId: 's1' },
      { sql: 'SELECT 1', queryId: 's1' },
    ]);
  });

  it('times out with TimeoutError; a late answer is ignored', async () => {
    const f = fixture();
    const q = f.manager.query('SELECT 1', 1000);
    f.timers[0]!();
    await expect(q).rejects.toBeInstanceOf(TimeoutError);
    f.manager.message({ queryId: 's1', columns: [], rows: [] });
    expect(f.manager.size).toBe(0);
  });
});
