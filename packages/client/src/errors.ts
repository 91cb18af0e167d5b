/** Errors the client raises; each says what was refused and whether anything changed. */

/** A write was refused locally because too many ops await the server (nothing changed). */
export class BackpressureError extends Error {
  override name = 'BackpressureError';
  constructor(readonly pendingOps: number, readonly maxPendingOps: number) {
    super(`write refused: ${pendingOps} ops await the server (maxPendingOps ${maxPendingOps}); nothing was changed`);
  }
}

/** The server refused an op (OP_REJECTED). The local replica keeps the value until corrected. */
export class OpRejectedError extends Error {
  override name = 'OpRejectedError';
  constructor(readonly opId: string, readonly reason: string, readonly code?: number) {
    super(`server refused op ${opId}${code === undefined ? '' : ` (${code})`}: ${reason}`);
  }
}

/** A write-concern wait or a request ran out of time. */
export class TimeoutError extends Error {
  override name = 'TimeoutError';
}

/** An invalid argument (bad lock or topic name, bad query). Nothing was sent or changed. */
export class InvalidArgumentError extends Error {
  override name = 'InvalidArgumentError';
}

/**
 * The server answered an SQL query with an error (`SQL_QUERY_RESP.error`). `code` is the
 * server's: `FEATURE_DISABLED` when SQL is off (the default), `SQL_ERROR` for a bad query; or
 * `NOT_SUPPORTED` when this client cannot send SQL at all (HTTP transport, no server), or
 * `CLIENT_CLOSED`. Nothing changed.
 */
export class SqlError extends Error {
  override name = 'SqlError';
  constructor(readonly code: string, message: string, readonly queryId?: string) {
    super(message);
  }
}

/**
 * A TopGun client API whose server side this server does not offer yet (search, entry
 * processors, conflict resolvers, cluster routing). `feature` names it; nothing was sent or
 * changed. `code` is `NOT_SUPPORTED`.
 */
export class NotSupportedError extends Error {
  override name = 'NotSupportedError';
  readonly code = 'NOT_SUPPORTED';
  constructor(readonly feature: string, reason: string) {
    super(`${feature} is not supported: ${reason}`);
  }
}
