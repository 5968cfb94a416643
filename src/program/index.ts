/**
 * Devices whose behaviour lives in another program (Python, or any language
 * that speaks the protocol of docs/device-programs.md).
 */
export { startDeviceProgram, DeviceProgram, DEFAULT_PROGRAM_TIMEOUT_MS, type DeviceProgramOptions } from './program.js';
export { programCommand, ProgramStartError, PYTHON_PACKAGE_DIR } from './launch.js';
export { PROGRAM_PROTOCOL_VERSION } from './wire.js';
