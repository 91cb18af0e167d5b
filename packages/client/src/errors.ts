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

/**
 * The client was set to connect over a WebSocket (`transport: 'websocket'`, the default, with a
 * `serverUrl`) where no WebSocket implementation exists: `globalThis.WebSocket` is absent (Node
 * before 22, some serverless runtimes) and none was passed as `options.WebSocket`. Thrown by the
 * constructor, so nothing was created, stored or sent. `code` is `NO_WEBSOCKET`.
 */
export class NoWebSocketError extends Error {
  override name = 'NoWebSocketError';
  readonly code = 'NO_WEBSOCKET';
  constructor(readonly serverUrl: string) {
    super(
      `no WebSocket implementation to connect to ${serverUrl}: globalThis.WebSocket is absent. ` +
        "Pass one in the options (e.g. `import WebSocket from 'ws'; new TopGunClient({ WebSocket, ... })`), " +
        "or use the HTTP transport (`transport: 'http'`, or `'auto'` to fall back to it).",
    );
  }
}

/**
 * The server refused the client's token `failures` times in a row (`maxAuthFailures`), so the
 * client stopped reconnecting (connection state `ERROR`, engine state `failed`). Local reads
 * and writes go on; queued ops wait. A new token (`setAuthToken`, `setAuthTokenProvider`,
 * `setToken`, or one returned by `onAuthRequired`) or `start()` makes it try again.
 * `code` is `AUTH_FAILED`.
 */
export class AuthFailedError extends Error {
  override name = 'AuthFailedError';
  readonly code = 'AUTH_FAILED';
  constructor(readonly reason: string, readonly failures: number) {
    super(
      `authentication failed ${failures} time${failures === 1 ? '' : 's'} in a row (last: ${reason}); ` +
        'the client stopped reconnecting: set a new token (setAuthToken / setAuthTokenProvider) or call start() to try again',
    );
  }
}
