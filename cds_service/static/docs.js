// The interactive API docs: Swagger UI (vendored, no CDN) over the service's own OpenAPI document;
// no validator badge (it would call validator.swagger.io).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
});
