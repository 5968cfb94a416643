/** Test teardown: closes each in order (drivers, clients, then servers). */
export function closeEach(...things: ({ close(): void } | undefined)[]): void {
  for (const t of things) t?.close();
}
