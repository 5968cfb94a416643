/** What `muser vm` reports as `muser vm: <message>` before exiting 1. */
export class VmError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VmError';
  }
}
