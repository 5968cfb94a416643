/** What names a device to load in a child process: a sample or a device file, with its options. */
export interface DeviceArg {
  /** A sample name or a module path. */
  device: string;
  options: Record<string, string | boolean>;
  /** Polling mode's idle window in ms, absent when off. */
  pollIdleMs?: number;
}
