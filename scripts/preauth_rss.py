#!/usr/bin/env python3
"""What unauthenticated connections cost a JWT server: the server's RSS while N connections
each send one large WebSocket frame without authenticating.

    scripts/preauth_rss.py --server target/release/topgun-server [--connections 200] \
        [--frame-mib 6] [--seconds 10] [--config FILE]

Starts the server on a free loopback port with a fresh data directory, opens the
connections (WebSocket handshake, then a masked binary frame header announcing the frame
and as much of its payload as the server reads), waits, prints the server's resident memory
before and after as one JSON line, and stops the server. Bounded: one frame per connection,
and the whole run stops after --seconds.
"""

import argparse
import base64
import json
import os
import selectors
import socket
import struct
import subprocess
import tempfile
import time

SECRET = "preauth-rss-secret-0123456789abcdef"


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(binary, data_dir, config):
    env = dict(os.environ, JWT_SECRET=SECRET, RUST_LOG="warn")
    env.pop("TOPGUN_NO_AUTH", None)
    server = subprocess.Popen(
        [binary, "--port", "0", "--host", "127.0.0.1", "--data-dir", data_dir]
        + (["--config", config] if config else []),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = server.stdout.readline().strip()
    if not line.startswith("PORT="):
        server.kill()
        raise RuntimeError(f"expected PORT=<n>, got {line!r}")
    return server, int(line[5:])


def handshake(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    status = response.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in status:
        sock.close()
        return None, status
    return sock, status


def frame_header(length):
    # FIN + binary, masked, 64-bit length, then a zero mask (payload sent as is).
    return bytes([0x82, 0x80 | 127]) + struct.pack(">Q", length) + b"\0\0\0\0"


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--server", required=True)
    args.add_argument("--connections", type=int, default=200)
    args.add_argument("--frame-mib", type=int, default=6)
    args.add_argument("--seconds", type=float, default=10.0)
    args.add_argument("--config", help="a TOML config file for the server")
    opts = args.parse_args()
    frame = opts.frame_mib << 20
    with tempfile.TemporaryDirectory() as data_dir:
        server, port = start(opts.server, data_dir, opts.config)
        try:
            time.sleep(0.5)
            before = rss_mib(server.pid)
            selector = selectors.DefaultSelector()
            refused, opened = {}, 0
            for _ in range(opts.connections):
                sock, status = handshake(port)
                if sock is None:
                    refused[status] = refused.get(status, 0) + 1
                    continue
                opened += 1
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_WRITE, [frame_header(frame), frame])
            chunk = b"\0" * 65536
            deadline = time.monotonic() + opts.seconds
            sent = 0
            while time.monotonic() < deadline and selector.get_map():
                for key, _ in selector.select(timeout=0.2):
                    header, left = key.data
                    try:
                        if header:
                            key.data[0] = header[key.fileobj.send(header):]
                        elif left > 0:
                            n = key.fileobj.send(chunk[: min(left, len(chunk))])
                            key.data[1] -= n
                            sent += n
                        else:
                            selector.unregister(key.fileobj)
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        selector.unregister(key.fileobj)
                        key.fileobj.close()
            peak = rss_mib(server.pid)
            print(
                json.dumps(
                    {
                        "connections": opts.connections,
                        "opened": opened,
                        "refused": refused,
                        "frame_mib": opts.frame_mib,
                        "payload_mib_sent": round(sent / 1048576, 1),
                        "server_rss_mib_before": round(before, 1),
                        "server_rss_mib_after": round(peak, 1),
                    }
                )
            )
            for key in list(selector.get_map().values()):
                key.fileobj.close()
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
