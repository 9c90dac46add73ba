/** Public surface of the transport layer. */
export type {
  Connection,
  ConnectionHandler,
  DialOptions,
  Listener,
  ListenerCloseOptions,
  Transport,
  TransportAddress,
} from './types.ts';
export { checkAddress, formatAddress, parseAddress } from './address.ts';
export { TcpTransport, DEFAULT_HIGH_WATER_MARK, type TcpTransportOptions } from './tcp.ts';
export { TlsTransport, type TlsTransportOptions } from './tls.ts';
export {
  MemoryNetwork,
  MemoryTransport,
  defaultMemoryNetwork,
  DEFAULT_MEMORY_HIGH_WATER_MARK,
  type MemoryTransportOptions,
} from './memory.ts';
export { TokenBucket, defaultBurstBytes, type TokenBucketOptions } from './token-bucket.ts';
export {
  ShapedConnection,
  ShapedTransport,
  makeBucket,
  shapeConnection,
  type ShapedConnectionOptions,
  type ShapedTransportOptions,
  type ShaperOptions,
} from './shaper.ts';
export { formatRate, parseDuration, parseRate } from './rate.ts';
export { FaultProxy, type BytesEvent, type CutMode, type Direction, type FaultProxyOptions, type FaultProxyStats } from './fault-proxy.ts';
export {
  transportChannels,
  type ConnectionCloseEvent,
  type ConnectionOpenEvent,
  type HandshakeFailedEvent,
} from './events.ts';
export { createThrowawayPki, opensslAvailable, type CertAndKey, type ThrowawayPki } from './throwaway-pki.ts';
