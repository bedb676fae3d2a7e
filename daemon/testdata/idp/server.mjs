// A real, independent OAuth2 authorization server for tokend's end-to-end
// tests: panva/oidc-provider serving only the client-credentials grant at
// /oauth2/token on 127.0.0.1.
//
// Env: PORT, CLIENT_ID, CLIENT_SECRET, AUTH_METHOD (client_secret_basic |
// client_secret_post), TTL (seconds), SCOPE, RESOURCE (the one resource
// server), DEFAULT_RESOURCE (assumed when a request names none; default
// RESOURCE: set it elsewhere to require resource=), ACCEPT_BOTH=1 (act as
// a lenient server that tolerates Basic plus client_secret in the body, as
// the documented API recipe sends), JWKS (the client's public keys, JSON,
// for AUTH_METHOD=private_key_jwt), TLS_CERT, TLS_KEY and CLIENT_CA (PEM
// files: serve https, asking for client certificates from CLIENT_CA) and
// CLIENT_DN (AUTH_METHOD=tls_client_auth: the certificate subject),
// DPOP=1 (the client must send DPoP proofs: dpop_bound_access_tokens) and
// DPOP_NONCE=1 (every proof must carry the server's nonce: a first request
// without one is answered use_dpop_nonce), CERT_BOUND=1 (tokens bound to
// the client certificate, RFC 8705 §3: cnf.x5t#S256). Introspection is at
// /token/introspection, for the client itself.
// Test-only: POST /__fault?status=503&count=2 fails the next token requests.
import { X509Certificate, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider, { errors } from 'oidc-provider';

const env = process.env;
const PORT = Number(env.PORT || 9000);
const TLS = Boolean(env.TLS_CERT);
const ISSUER = `${TLS ? 'https' : 'http'}://127.0.0.1:${PORT}`;
const TTL = Number(env.TTL || 60);
const SCOPE = env.SCOPE || 'https://rbm.vibes.com/rbm.agents';
const RESOURCE = env.RESOURCE || 'https://rbm.vibes.com/';
const ACCEPT_BOTH = env.ACCEPT_BOTH === '1';

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: env.CLIENT_ID || 'rbm-client',
    client_secret: env.CLIENT_SECRET || 'rbm-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: env.AUTH_METHOD || 'client_secret_basic',
    ...(env.JWKS ? { jwks: JSON.parse(env.JWKS) } : {}),
    ...(env.CLIENT_DN ? { tls_client_auth_subject_dn: env.CLIENT_DN } : {}),
    ...(env.DPOP === '1' ? { dpop_bound_access_tokens: true } : {}),
    ...(env.CERT_BOUND === '1' ? { tls_client_certificate_bound_access_tokens: true } : {}),
  }],
  routes: { token: '/oauth2/token' },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', ...(TLS ? ['tls_client_auth'] : [])],
  scopes: [],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    dPoP: {
      enabled: true,
      ...(env.DPOP_NONCE === '1' ? { nonceSecret: randomBytes(32), requireNonce: () => true } : {}),
    },
    mTLS: {
      enabled: TLS,
      tlsClientAuth: TLS,
      certificateBoundAccessTokens: env.CERT_BOUND === '1',
      // The certificate the TLS layer received (verified against CLIENT_CA
      // there, without refusing the handshake).
      getCertificate: (ctx) => {
        const c = ctx.socket.getPeerCertificate?.();
        return c?.raw ? new X509Certificate(c.raw) : undefined;
      },
      certificateAuthorized: (ctx) => ctx.socket.authorized === true,
      certificateSubjectMatches: (ctx, property, expected) => {
        const c = ctx.socket.getPeerCertificate?.();
        return property === 'tls_client_auth_subject_dn' && c?.raw && new X509Certificate(c.raw).subject === expected;
      },
    },
    resourceIndicators: {
      enabled: true,
      // Bind scope-only requests to our API, and be strict about scopes
      // (oidc-provider would silently drop unknown ones).
      defaultResource: () => env.DEFAULT_RESOURCE || RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== RESOURCE) throw new errors.InvalidTarget();
        const asked = (ctx.oidc.params.scope || '').split(' ').filter(Boolean);
        const bad = asked.find((s) => !SCOPE.split(' ').includes(s));
        if (bad) throw new errors.InvalidScope('requested scope is not allowed', bad);
        return { scope: SCOPE, audience: RESOURCE, accessTokenTTL: TTL, accessTokenFormat: 'opaque' };
      },
    },
  },
  ttl: { ClientCredentials: () => TTL },
});

let fault = { status: 0, count: 0 };
let served = 0;
provider.use(async (ctx, next) => {
  if (ctx.path === '/__fault') {
    fault = { status: Number(ctx.query.status || 0), count: Number(ctx.query.count || 1) };
    ctx.body = fault;
    return;
  }
  if (ctx.path === '/__stats') {
    ctx.body = { served };
    return;
  }
  if (ctx.path === '/oauth2/token') {
    served += 1;
    if (fault.count > 0 && fault.status) {
      fault.count -= 1;
      ctx.status = fault.status;
      ctx.body = { error: fault.status >= 500 ? 'server_error' : 'invalid_request', error_description: 'injected fault' };
      return;
    }
    if (ACCEPT_BOTH && ctx.get('authorization') && ctx.is('application/x-www-form-urlencoded')) {
      const chunks = [];
      for await (const c of ctx.req) chunks.push(c);
      const form = new URLSearchParams(Buffer.concat(chunks).toString());
      form.delete('client_secret');
      ctx.req.body = form.toString();
    }
  }
  await next();
});

const listening = () => console.log(`listening ${ISSUER}/oauth2/token`);
if (TLS) {
  https.createServer({
    cert: readFileSync(env.TLS_CERT), key: readFileSync(env.TLS_KEY),
    ca: env.CLIENT_CA ? readFileSync(env.CLIENT_CA) : undefined, requestCert: true, rejectUnauthorized: false,
  }, provider.callback()).listen(PORT, '127.0.0.1', listening);
} else {
  provider.listen(PORT, '127.0.0.1', listening);
}
