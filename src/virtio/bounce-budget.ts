/** The device-wide limit on bounce buffers that requests over memory without views hold. */

/**
 * Bytes of bounce buffers (copies of guest memory without views) a device
 * may hold at once, so requests over fd-less memory cannot make the
 * process allocate without bound: over the limit, they wait their turn.
 */
export class BounceBudget {
  private used = 0;
  private waiting: { bytes: number; go: () => void }[] = [];

  constructor(readonly limit = 64 * 1024 * 1024) {}

  /**
   * Waits until `bytes` fit (a request larger than the limit waits for all),
   * then holds them. `now` takes them at once: for a request that already
   * holds some, so that requests never wait on each other in a circle.
   */
  async acquire(bytes: number, now = false): Promise<() => void> {
    const take = Math.min(bytes, this.limit);
    if (!now && (this.used + take > this.limit || this.waiting.length > 0)) {
      await new Promise<void>((go) => this.waiting.push({ bytes: take, go }));
    } else {
      this.used += take;
    }
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.used -= take;
      this.admit();
    };
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.used + this.waiting[0].bytes <= this.limit) {
      const w = this.waiting.shift()!;
      this.used += w.bytes;
      w.go();
    }
  }
}
