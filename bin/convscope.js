#!/usr/bin/env node
// The published command runs the compiled library (npm ci / npm run build write dist/).
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
