/**
 * Transport events on node:diagnostics_channel, so the engine, the lab and
 * tests can count connections and bytes without the transport logging.
 */
import diagnostics_channel from 'node:diagnostics_channel';

export interface ConnectionOpenEvent {
  readonly transport: string;
  /** 'dial' for the side that connected, 'accept' for the listening side. */
  readonly role: 'dial' | 'accept';
  readonly remote: string;
}

export interface ConnectionCloseEvent {
  readonly transport: string;
  readonly remote: string;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** Stable code of the error that ended the connection, if any. */
  readonly errorCode?: string;
  readonly errorMessage?: string;
}

export interface HandshakeFailedEvent {
  readonly transport: string;
  readonly remote: string;
  readonly errorMessage: string;
}

export const transportChannels = {
  open: diagnostics_channel.channel('presync:transport:open'),
  close: diagnostics_channel.channel('presync:transport:close'),
  /** An inbound connection that never became a Connection (TLS handshake or auth failed). */
  handshakeFailed: diagnostics_channel.channel('presync:transport:handshake-failed'),
};

export function publishOpen(e: ConnectionOpenEvent): void {
  if (transportChannels.open.hasSubscribers) transportChannels.open.publish(e);
}

export function publishClose(e: ConnectionCloseEvent): void {
  if (transportChannels.close.hasSubscribers) transportChannels.close.publish(e);
}

export function publishHandshakeFailed(e: HandshakeFailedEvent): void {
  if (transportChannels.handshakeFailed.hasSubscribers) transportChannels.handshakeFailed.publish(e);
}
