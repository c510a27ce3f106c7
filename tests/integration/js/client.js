// A zipkin-js client: starts a trace and makes one GET over mTLS with node-fetch wrapped by
// zipkin-instrumentation-fetch, posts its CLIENT span, and prints {status, body} as one JSON line.
// Usage: node client.js URL ZIPKIN_URL CERT_DIR
'use strict';
const fs = require('fs');
const https = require('https');
const path = require('path');
const fetch = require('node-fetch');
const wrapFetch = require('zipkin-instrumentation-fetch');
const makeTracer = require('./tracer');

const [url, zipkinUrl, certs] = process.argv.slice(2);
const {tracer, logger} = makeTracer('js-client', zipkinUrl);
const agent = new https.Agent({family: 4,  // the sidecar listens on 127.0.0.1
                               ca: fs.readFileSync(path.join(certs, 'ca.pem')),
                               cert: fs.readFileSync(path.join(certs, 'client.pem')),
                               key: fs.readFileSync(path.join(certs, 'client.key'))});
const zipkinFetch = wrapFetch(fetch, {tracer, remoteServiceName: 'sidecar'});

(async () => {
  const res = await zipkinFetch(url, {agent});
  const body = await res.text();
  // The span is recorded once the response is in; post it now and wait for the collector's answer.
  const posted = new Promise((resolve, reject) => {
    logger.on('success', resolve);
    logger.on('error', reject);
  });
  logger.processQueue(logger.fetchImplementation);
  await posted;
  console.log(JSON.stringify({status: res.status, body}));
})().catch((e) => { console.error(String(e)); process.exit(1); });
