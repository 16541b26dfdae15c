import{a,b,c,d}from"./chunk-MEWXRSAN.js";import"./chunk-4SBBNAMU.js";import"./chunk-LOKUJV26.js";export{d as css,b as cssCompletionSource,c as cssLanguage,a as defineCSSCompletionSource};
