/** The server to sync with: `?server=ws://host:port/ws`, else a local development server. */
export function serverUrl(): string {
  return new URLSearchParams(location.search).get('server') ?? 'ws://127.0.0.1:8080/ws';
}
