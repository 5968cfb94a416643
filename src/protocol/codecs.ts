/**
 * Per-command decoder tables, so a dispatcher can decode a payload from the
 * header's command number alone: `requestDecoders[cmd](payload)`.
 */
import { Command } from './constants.js';
import { decodeDeviceFeatureReply, decodeDeviceFeatureRequest } from './device-feature.js';
import { decodeDeviceInfoReply, decodeDeviceInfoRequest } from './device-info.js';
import { decodeDeviceResetReply, decodeDeviceResetRequest } from './device-reset.js';
import { decodeDmaMapReply, decodeDmaMapRequest, decodeDmaUnmapReply, decodeDmaUnmapRequest } from './dma.js';
import {
  decodeDmaReadReply,
  decodeDmaReadRequest,
  decodeDmaWriteReply,
  decodeDmaWriteRequest,
} from './dma-access.js';
import { decodeIrqInfoReply, decodeIrqInfoRequest, decodeSetIrqsReply, decodeSetIrqsRequest } from './irq.js';
import {
  decodeMigDataReadReply,
  decodeMigDataReadRequest,
  decodeMigDataWriteReply,
  decodeMigDataWriteRequest,
} from './migration-data.js';
import {
  decodeRegionReadReply,
  decodeRegionReadRequest,
  decodeRegionWriteReply,
  decodeRegionWriteRequest,
} from './region-access.js';
import { decodeRegionInfoReply, decodeRegionInfoRequest } from './region-info.js';
import { decodeRegionIoFdsReply, decodeRegionIoFdsRequest } from './region-io-fds.js';
import { decodeRegionWriteMultiReply, decodeRegionWriteMultiRequest } from './region-write-multi.js';
import { decodeVersion } from './version.js';

/** A payload decoder: throws only ProtocolError. */
export type PayloadDecoder<T> = (payload: Buffer) => T;

/** Request (command) payload decoders, by command. */
export const requestDecoders = {
  [Command.VERSION]: decodeVersion,
  [Command.DMA_MAP]: decodeDmaMapRequest,
  [Command.DMA_UNMAP]: decodeDmaUnmapRequest,
  [Command.DEVICE_GET_INFO]: decodeDeviceInfoRequest,
  [Command.DEVICE_GET_REGION_INFO]: decodeRegionInfoRequest,
  [Command.DEVICE_GET_REGION_IO_FDS]: decodeRegionIoFdsRequest,
  [Command.DEVICE_GET_IRQ_INFO]: decodeIrqInfoRequest,
  [Command.DEVICE_SET_IRQS]: decodeSetIrqsRequest,
  [Command.REGION_READ]: decodeRegionReadRequest,
  [Command.REGION_WRITE]: decodeRegionWriteRequest,
  [Command.DMA_READ]: decodeDmaReadRequest,
  [Command.DMA_WRITE]: decodeDmaWriteRequest,
  [Command.DEVICE_RESET]: decodeDeviceResetRequest,
  [Command.REGION_WRITE_MULTI]: decodeRegionWriteMultiRequest,
  [Command.DEVICE_FEATURE]: decodeDeviceFeatureRequest,
  [Command.MIG_DATA_READ]: decodeMigDataReadRequest,
  [Command.MIG_DATA_WRITE]: decodeMigDataWriteRequest,
} as const satisfies Record<Command, PayloadDecoder<unknown>>;

/** Reply payload decoders, by command. */
export const replyDecoders = {
  [Command.VERSION]: decodeVersion,
  [Command.DMA_MAP]: decodeDmaMapReply,
  [Command.DMA_UNMAP]: decodeDmaUnmapReply,
  [Command.DEVICE_GET_INFO]: decodeDeviceInfoReply,
  [Command.DEVICE_GET_REGION_INFO]: decodeRegionInfoReply,
  [Command.DEVICE_GET_REGION_IO_FDS]: decodeRegionIoFdsReply,
  [Command.DEVICE_GET_IRQ_INFO]: decodeIrqInfoReply,
  [Command.DEVICE_SET_IRQS]: decodeSetIrqsReply,
  [Command.REGION_READ]: decodeRegionReadReply,
  [Command.REGION_WRITE]: decodeRegionWriteReply,
  [Command.DMA_READ]: decodeDmaReadReply,
  [Command.DMA_WRITE]: decodeDmaWriteReply,
  [Command.DEVICE_RESET]: decodeDeviceResetReply,
  [Command.REGION_WRITE_MULTI]: decodeRegionWriteMultiReply,
  [Command.DEVICE_FEATURE]: decodeDeviceFeatureReply,
  [Command.MIG_DATA_READ]: decodeMigDataReadReply,
  [Command.MIG_DATA_WRITE]: decodeMigDataWriteReply,
} as const satisfies Record<Command, PayloadDecoder<unknown>>;

/** The decoded request type of command `C`. */
export type RequestOf<C extends Command> = ReturnType<(typeof requestDecoders)[C]>;
/** The decoded reply type of command `C`. */
export type ReplyOf<C extends Command> = ReturnType<(typeof replyDecoders)[C]>;

/** True if `command` is a command number this codec knows. */
export function isKnownCommand(command: number): command is Command {
  return Object.prototype.hasOwnProperty.call(requestDecoders, command);
}
