// Checks an AsyncAPI document (a file, or stdin) with @asyncapi/parser, offline.
// Prints one JSON line: {"diagnostics": [{code, severity, message, path}], "external": [...]}
// and exits 1 when the document has an error or a warning (severity 0 or 1), or a $ref
// outside the document (which would make the parser read files or the network).
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const text = readFileSync(process.argv[2] ?? 0, 'utf8');
const external = [];
(function walk(value, path) {
  if (Array.isArray(value)) {
    value.forEach((item, i) => walk(item, `${path}/${i}`));
  } else if (value && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      if (key === '$ref' && typeof item === 'string' && !item.startsWith('#')) {
        external.push(`${path}/$ref: ${item}`);
      }
      walk(item, `${path}/${key}`);
    }
  }
})(JSON.parse(text), '');
if (external.length > 0) {
  console.log(JSON.stringify({ diagnostics: [], external }));
  process.exit(1);
}

const { document, diagnostics } = await new Parser().parse(text);
const found = diagnostics.map((d) => ({
  code: String(d.code),
  severity: d.severity,
  message: d.message,
  path: d.path.join('/'),
}));
console.log(JSON.stringify({ parsed: document !== undefined, diagnostics: found, external }));
process.exit(document === undefined || found.some((d) => d.severity <= 1) ? 1 : 0);
