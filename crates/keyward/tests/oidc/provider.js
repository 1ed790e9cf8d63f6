// A real OpenID provider for keyward's single sign-on tests: panva's oidc-provider (the
// certified Node.js implementation) with its development sign-in pages, which take any login
// name and any password. The login name is the person's `sub`; the accounts below give some of
// them claims, and anyone else gets `preferred_username` = their login name.
//
// Configured by the environment: KEYWARD_OIDC_REDIRECT_URI (keyward's callback) and
// KEYWARD_OIDC_CLIENT_SECRET. Listens on 127.0.0.1 at a port the OS picks and prints
// `listening on http://127.0.0.1:PORT` (the issuer) on stdout once it accepts connections.

import http from 'node:http';
import Provider from 'oidc-provider';

const redirectUri = process.env.KEYWARD_OIDC_REDIRECT_URI;
const clientSecret = process.env.KEYWARD_OIDC_CLIENT_SECRET;
if (!redirectUri || !clientSecret) {
  console.error('KEYWARD_OIDC_REDIRECT_URI and KEYWARD_OIDC_CLIENT_SECRET are required');
  process.exit(2);
}

// Claims by login name.
const ACCOUNTS = {
  ann: { preferred_username: 'ann', email: 'ann@example.com', groups: ['staff', 'keyward-admins'] },
  bob: { preferred_username: 'Bob', email: 'bob@example.com', groups: ['staff'] },
  // No usable preferred_username: keyward falls back to the email address.
  'cy-sub': { preferred_username: 'Cy Young', email: 'Cy+ci@Example.com' },
};

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'keyward',
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    // Put the scopes' claims in the ID token itself (keyward reads only the ID token).
    conformIdTokenClaims: false,
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name'],
      groups: ['groups'],
    },
    pkce: { required: () => true },
    cookies: { keys: ['keyward-test-only-cookie-key'] },
    async findAccount(ctx, id) {
      const claims = ACCOUNTS[id] ?? { preferred_username: id };
      return {
        accountId: id,
        async claims() {
          return { sub: id, email_verified: true, ...claims };
        },
      };
    },
  });
  // Plain HTTP on loopback, for tests only.
  provider.proxy = false;
  server.on('request', provider.callback());
  console.log(`listening on ${issuer}`);
});
