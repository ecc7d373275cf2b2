// Express Gateway with key-auth in front of a policy that answers 200: the key check alone.
const path = require('path');
const gateway = require('express-gateway');

gateway().load(path.join(__dirname, 'config')).run();
