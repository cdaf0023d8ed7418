// Starts Swagger UI (flask-swagger-ui's copy, served by this daemon) on this server's /openapi.json.
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,        // never ask an outside validator about the document
    tryItOutEnabled: true,
  });
});
