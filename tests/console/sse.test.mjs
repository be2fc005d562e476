// The console's Server-Sent Events parser (console/tail.js), without a browser: the stream
// arrives in arbitrary pieces, with LF or CRLF line ends, comments and multi-line data.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sseParser } from '../../console/tail.js';

function parse(pieces) {
  const events = [];
  const feed = sseParser((event) => events.push(event));
  for (const piece of pieces) feed(piece);
  return events;
}

test('events split anywhere are put back together', () => {
  const stream = 'event: log\nid: a1\ndata: {"message":"one"}\n\n: keep-alive\n\nevent: log\nid: a2\ndata: {"message":"two"}\n\n';
  for (let cut = 0; cut <= stream.length; cut++) {
    const events = parse([stream.slice(0, cut), stream.slice(cut)]);
    assert.deepEqual(events, [
      { event: 'log', id: 'a1', data: '{"message":"one"}' },
      { event: 'log', id: 'a2', data: '{"message":"two"}' },
    ], `cut at ${cut}`);
  }
});

test('CRLF line ends, multi-line data and a missing space after the colon', () => {
  const events = parse(['event:dropped\r\ndata: {"a":\r\ndata:1}\r\n\r\n']);
  assert.deepEqual(events, [{ event: 'dropped', id: '', data: '{"a":\n1}' }]);
});

test('an event without data is not dispatched, and an unfinished one waits', () => {
  assert.deepEqual(parse(['event: log\n\n', 'event: log\ndata: x\n']), []);
});
