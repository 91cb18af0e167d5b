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
