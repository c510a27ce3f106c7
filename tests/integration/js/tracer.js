// A zipkin-js tracer reporting Zipkin v2 JSON over HTTP (zipkin-transport-http) to zipkinUrl,
// as an application using zipkin-js sets one up: B3 propagation, joining the caller's span on the
// server side (supportsJoin, as the sidecar does), every trace it starts sampled.
'use strict';
const {Tracer, BatchRecorder, ExplicitContext, jsonEncoder, sampler} = require('zipkin');
const {HttpLogger} = require('zipkin-transport-http');

module.exports = function makeTracer(serviceName, zipkinUrl) {
  const logger = new HttpLogger({endpoint: zipkinUrl, jsonEncoder: jsonEncoder.JSON_V2,
                                 httpInterval: 100});
  logger.on('error', (e) => console.error(`zipkin post failed: ${e.message}`));
  const tracer = new Tracer({ctxImpl: new ExplicitContext(), recorder: new BatchRecorder({logger}),
                             localServiceName: serviceName, supportsJoin: true,
                             sampler: new sampler.Sampler(sampler.alwaysSample)});
  return {tracer, logger};
};
