import{a,b,c,d}from"./chunk-TQ3V2DQP.js";import"./chunk-VFHAQA6F.js";import"./chunk-LOKUJV26.js";export{d as css,b as cssCompletionSource,c as cssLanguage,a as defineCSSCompletionSource};
