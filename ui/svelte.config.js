// Svelte compiles TypeScript in components natively; no preprocessing is needed.
export default {};
