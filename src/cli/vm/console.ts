/**
 * The guest's serial console as muser reads it. vm/init marks the moments
 * that matter with `\x1fmuser-vm:NONCE:WHAT\x1f` (\x1f: the unit separator,
 * never typed, ignored by terminals): `begin` when the user's shell or
 * command starts, `end:STATUS` when it exits, `error:TEXT` when the guest
 * could not get there. Before `begin` the console is the boot log; from
 * `begin` to `end` it is the user's, passed on byte for byte, markers
 * removed.
 */

/** What the guest reported. */
export type ConsoleEvent = { kind: 'begin' } | { kind: 'end'; status: number } | { kind: 'error'; message: string };

/** Where the console's bytes go. */
export interface ConsoleSinks {
  /** Before `begin` and after `end`: the boot (and power-off) log. */
  log(data: Buffer): void;
  /** Between `begin` and `end`: the user's shell or command. */
  guest(data: Buffer): void;
  event(e: ConsoleEvent): void;
}

const SEP = '\x1f';
/** A marker longer than this is not one (a stray \x1f in the output). */
const MAX_MARKER = 4096;

/** Splits the console stream at vm/init's markers. */
export class GuestConsole {
  /** Where the console is: booting, the user's, or powering off. */
  phase: 'boot' | 'guest' | 'done' = 'boot';
  private pending = '';
  private readonly prefix: string;

  constructor(
    nonce: string,
    private readonly sinks: ConsoleSinks,
  ) {
    this.prefix = `${SEP}muser-vm:${nonce}:`;
  }

  /** Feeds bytes read from the console. */
  push(chunk: Buffer): void {
    this.pending += chunk.toString('latin1');
    for (;;) {
      const at = this.pending.indexOf(this.prefix);
      if (at < 0) {
        // Hold back a tail that may be the start of a marker.
        const sep = this.pending.lastIndexOf(SEP);
        const keep = sep >= 0 && this.prefix.startsWith(this.pending.slice(sep)) ? sep : this.pending.length;
        this.emit(this.pending.slice(0, keep));
        this.pending = this.pending.slice(keep);
        return;
      }
      const close = this.pending.indexOf(SEP, at + this.prefix.length);
      if (close < 0) {
        this.emit(this.pending.slice(0, at));
        this.pending = this.pending.slice(at);
        if (this.pending.length <= MAX_MARKER) return;
        this.emit(this.pending.slice(0, 1)); // not a marker after all
        this.pending = this.pending.slice(1);
        continue;
      }
      this.emit(this.pending.slice(0, at));
      this.marker(this.pending.slice(at + this.prefix.length, close));
      this.pending = this.pending.slice(close + 1);
    }
  }

  /** The stream ended: whatever was held back goes out. */
  end(): void {
    this.emit(this.pending);
    this.pending = '';
  }

  private emit(text: string): void {
    if (text === '') return;
    const data = Buffer.from(text, 'latin1');
    if (this.phase === 'guest') this.sinks.guest(data);
    else this.sinks.log(data);
  }

  private marker(body: string): void {
    if (body === 'begin') {
      this.phase = 'guest';
      this.sinks.event({ kind: 'begin' });
    } else if (body.startsWith('end:')) {
      this.phase = 'done';
      this.sinks.event({ kind: 'end', status: Number.parseInt(body.slice(4), 10) & 0xff });
    } else if (body.startsWith('error:')) {
      this.phase = 'done';
      this.sinks.event({ kind: 'error', message: body.slice(6).replace(/\r/g, '').trim() });
    } else {
      this.emit(`${this.prefix}${body}${SEP}`);
    }
  }
}
