/**
 * Starts the real `topgun-server` binary on a free port with a fresh data directory, for the
 * integration and end-to-end tests. The binary comes from TOPGUN_SERVER_BIN (CI sets it to the
 * cargo-built one), else target/debug/topgun-server at the repository root.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

export function serverBinary(): string {
  const bin = process.env.TOPGUN_SERVER_BIN ?? path.join(repoRoot, 'target/debug/topgun-server');
  if (!existsSync(bin)) throw new Error(`topgun-server binary not found at ${bin}: build it (cargo build -p topgun-server) or set TOPGUN_SERVER_BIN`);
  return bin;
}

export interface RunningServer {
  port: number;
  url: string;
  stop(): Promise<void>;
  /** Everything the server printed, for failure messages. */
  log(): string;
}

export async function startServer(env: Record<string, string> = { TOPGUN_NO_AUTH: '1' }): Promise<RunningServer> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'topgun-test-'));
  const child: ChildProcess = spawn(serverBinary(), ['--port', '0', '--data-dir', dataDir], {
    env: { PATH: process.env.PATH ?? '', RUST_LOG: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not print PORT= within 15 s:\n${output}`)), 15_000);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const m = /PORT=(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    log: () => output,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The HS256 secret the JWT servers of the integration tests are started with. */
export const JWT_SECRET = 'test-secret-please-change-0123456789';

/** An HS256 JWT over `claims`, signed with `secret`. */
export function signJwt(claims: Record<string, unknown>, secret = JWT_SECRET): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}
