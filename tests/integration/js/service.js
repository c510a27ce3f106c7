// A local service: an express app instrumented with zipkin-instrumentation-express.
//   GET /hello  answers the B3 headers it was given, as JSON
//   GET /call?service=NAME&via=PORT   calls /hello of the service NAME through the sidecar's
//               outbound listener on 127.0.0.1:PORT, with node-fetch wrapped by
//               zipkin-instrumentation-fetch inside the request's trace, and answers what it got
// Usage: node service.js PORT SERVICE_NAME ZIPKIN_URL
'use strict';
const express = require('express');
const fetch = require('node-fetch');
const wrapFetch = require('zipkin-instrumentation-fetch');
const {expressMiddleware} = require('zipkin-instrumentation-express');
const makeTracer = require('./tracer');

const [port, serviceName, zipkinUrl] = process.argv.slice(2);
const {tracer} = makeTracer(serviceName, zipkinUrl);
const app = express();
app.use(expressMiddleware({tracer, serviceName, port: Number(port)}));

app.get('/hello', (req, res) => {
  const b3 = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.startsWith('x-b3-') || k === 'b3') b3[k] = v;
  }
  res.json({service: serviceName, b3});
});

app.get('/call', (req, res) => {
  const service = String(req.query.service);
  const zipkinFetch = wrapFetch(fetch, {tracer, remoteServiceName: service});
  // The call is a child of this request's server span (ExplicitContext: set it explicitly).
  tracer.letId(req._trace_id, () => zipkinFetch(`http://127.0.0.1:${Number(req.query.via)}/hello`,
                                                {headers: {Host: service}}))
    .then(async (r) => res.status(r.status).json({status: r.status, body: await r.json()}))
    .catch((e) => res.status(500).json({error: String(e)}));
});

app.listen(Number(port), '127.0.0.1');
