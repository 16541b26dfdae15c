import{a,b,c,d}from"./chunk-Z3QOKH62.js";import"./chunk-LOKUJV26.js";export{a as javascript,b as json,c as jsonld,d as typescript};
