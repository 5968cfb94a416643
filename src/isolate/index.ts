/** Isolated devices: each device's code in a child process that can crash, hang or be reloaded under a live connection. */
export { IsolatedServer, DEFAULT_WATCHDOG_MS, type IsolateOptions } from './supervisor.js';
export { runChild, type DeviceLoader } from './child.js';
export type { DeviceArg as IsolatedDeviceArg } from './device-arg.js';
