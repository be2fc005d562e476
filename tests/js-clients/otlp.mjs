// Sends log records through the OpenTelemetry JS SDK's own OTLP/HTTP exporters, unchanged:
//   node otlp.mjs <url> <json|protobuf> <service> <count> [token]
// Exits 0 once every batch was exported successfully, 1 naming the failure otherwise.
import { SeverityNumber, context, trace, TraceFlags } from '@opentelemetry/api';
import { LoggerProvider, BatchLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { OTLPLogExporter as JsonExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPLogExporter as ProtobufExporter } from '@opentelemetry/exporter-logs-otlp-proto';

const [url, encoding, service, count, token] = process.argv.slice(2);
const Exporter = { json: JsonExporter, protobuf: ProtobufExporter }[encoding];
if (!Exporter) {
  console.error(`unknown encoding ${encoding}`);
  process.exit(2);
}
const exporter = new Exporter({
  url,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});
const results = [];
const recording = {
  export(records, done) {
    exporter.export(records, (result) => {
      results.push(result);
      done(result);
    });
  },
  shutdown: () => exporter.shutdown(),
  forceFlush: () => exporter.forceFlush(),
};
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': service, 'deployment.environment': 'test' }),
  processors: [new BatchLogRecordProcessor({ exporter: recording, maxExportBatchSize: 512 })],
});
const logger = provider.getLogger('js-clients', '1.0.0');
const span = trace.wrapSpanContext({
  traceId: '5b8efff798038103d269b633813fc60c',
  spanId: 'eee19b7ec3c1b174',
  traceFlags: TraceFlags.SAMPLED,
});
const traced = trace.setSpan(context.active(), span);
for (let i = 0; i < Number(count); i++) {
  logger.emit({
    severityNumber: i % 2 ? SeverityNumber.WARN : SeverityNumber.INFO,
    severityText: i % 2 ? 'WARN' : 'INFO',
    body: `otel ${encoding} record ${i}`,
    attributes: { 'record.number': i, http: { route: '/pay' } },
    context: traced,
  });
}
await provider.forceFlush();
await provider.shutdown();
const failed = results.filter((result) => result.code !== 0);
if (results.length === 0 || failed.length > 0) {
  console.error(`export failed: ${failed.map((f) => String(f.error)).join('; ') || 'nothing exported'}`);
  process.exit(1);
}
console.log(`exported ${count} records in ${results.length} requests`);
