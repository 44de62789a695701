// Builds index.js into the WebAssembly component dist/enrich_order.wasm for the WIT world
// weir:function/handler, with componentize-js's JS API (`npm run build`).
import { mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { componentize } from "@bytecodealliance/componentize-js";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const output = here("./dist/enrich_order.wasm");

const { component } = await componentize({
  sourcePath: here("./index.js"),
  witPath: here("../../../wit"),
  worldName: "weir:function/handler",
  // weir calls `handle`, never wasi:http/incoming-handler, so the fetch-event handler goes.
  // The rest stays: `http` (fetch) because the world imports wasi:http anyway, `random`
  // (Math.random, crypto) and `clocks` (Date) because weir grants them, and `stdio`
  // because without it an uncaught JS error traps with no message.
  disableFeatures: ["fetch-event"],
});
await mkdir(here("./dist"), { recursive: true });
await writeFile(output, component);
console.log(`built ${output} (${component.length} bytes)`);
