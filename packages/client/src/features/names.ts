import { InvalidArgumentError } from '../errors.js';

const NAME = /^[A-Za-z0-9_.:/-]{1,256}$/;

/** Topic and lock names (PROTOCOL.md §7.1): checked here so a bad one fails before sending. */
export function checkName(kind: 'topic' | 'lock', name: string): void {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new InvalidArgumentError(`${kind} name must be 1-256 characters of [A-Za-z0-9_.:/-] (got ${JSON.stringify(name)})`);
  }
}
