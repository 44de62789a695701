// Builds index.js into the WebAssembly component dist/order_entity.wasm for the WIT world
// weir:function/entity, with componentize-js's JS API (`npm run build`).
import { mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { componentize } from "@bytecodealliance/componentize-js";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const output = here("./dist/order_entity.wasm");

const { component } = await componentize({
  sourcePath: here("./index.js"),
  witPath: here("../../../wit"),
  worldName: "weir:function/entity",
  // As in ../enrich-order-js/build.mjs: weir never calls wasi:http/incoming-handler.
  disableFeatures: ["fetch-event"],
});
await mkdir(here("./dist"), { recursive: true });
await writeFile(output, component);
console.log(`built ${output} (${component.length} bytes)`);
