/**
 * Entry of an isolated device's child process (`muser run --isolate`):
 * the parent passes the control socket as fd 3 and the device to load
 * through it. Loads devices exactly as `muser run` does.
 */
import { runChild } from '../../isolate/child.js';
import { loadDevice } from './load.js';

runChild((arg, verbose) => loadDevice({ device: arg.device, socket: '', options: arg.options }, verbose));
