From: someone
Subject: a plain message, not an entry

hi
