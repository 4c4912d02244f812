// The subpath cbor.ts imports: the same API as the package's main entry.
// (This project's moduleResolution predates package.json "exports", so TypeScript does not see its own "types" for it.)
declare module 'cbor-x/index-no-eval' {
  export * from 'cbor-x';
}
