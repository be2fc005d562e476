// Sends log lines through winston-loki, unchanged:
//   node loki.mjs <host> <protobuf|json> <job> <count> [token]
// winston-loki sends snappy-compressed protobuf unless `json: true`. Exits 0 once every batch
// was sent, 1 naming the failure otherwise.
import winston from 'winston';
import LokiTransport from 'winston-loki';

const [host, encoding, job, count, token] = process.argv.slice(2);
const errors = [];
const transport = new LokiTransport({
  host,
  json: encoding === 'json',
  labels: { job, env: 'test' },
  basicAuth: token ? `logmesh:${token}` : undefined,
  batching: true,
  interval: 0.2,
  replaceTimestamp: false,
  gracefulShutdown: false,
  clearOnError: true,
  onConnectionError: (error) => errors.push(error),
});
// winston-loki falls back to JSON when it cannot load snappy: make sure it did not.
const contentType = transport.batcher.contentType;
const expected = encoding === 'json' ? 'application/json' : 'application/x-protobuf';
if (contentType !== expected) {
  console.error(`winston-loki would send ${contentType}, not ${expected}`);
  process.exit(3);
}
const logger = winston.createLogger({ transports: [transport] });
for (let i = 0; i < Number(count); i++) {
  logger.log({ level: i % 2 ? 'warn' : 'info', message: `loki ${encoding} line ${i}`, labels: { part: String(i % 2) } });
}
await transport.flush();
if (errors.length > 0) {
  console.error(`push failed: ${errors.map(String).join('; ')}`);
  process.exit(1);
}
console.log(`pushed ${count} lines as ${contentType}`);
// The batching loop keeps the process alive.
process.exit(0);
