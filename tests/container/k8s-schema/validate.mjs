// Validates Kubernetes objects against the API schema that ships inside the kubernetes-models
// package (generated from Kubernetes' OpenAPI spec) and @kubernetes-models/cert-manager (the CRDs).
// Input on stdin: a JSON array of {file, object}. Output: one line per object, "ok FILE KIND NAME"
// or "invalid FILE KIND NAME: reason"; exit 1 when any is invalid or of an unknown kind.
import { readFileSync } from "node:fs";

const docs = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { file, object } of docs) {
  const { apiVersion = "", kind = "" } = object;
  const name = object.metadata?.name ?? "?";
  // apps/v1 -> kubernetes-models/apps/v1/Deployment; v1 -> kubernetes-models/v1/Service;
  // cert-manager.io/v1 -> @kubernetes-models/cert-manager/cert-manager.io/v1/Certificate.
  const pkg = apiVersion.includes("cert-manager.io") ? "@kubernetes-models/cert-manager" : "kubernetes-models";
  let Model;
  try {
    Model = (await import(`${pkg}/${apiVersion}/${kind}`))[kind];
  } catch (e) {
    console.log(`invalid ${file} ${kind} ${name}: no schema for ${apiVersion} ${kind}`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok ${file} ${kind} ${name}`);
  } catch (e) {
    console.log(`invalid ${file} ${kind} ${name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
